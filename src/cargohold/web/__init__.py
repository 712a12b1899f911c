"""HTTP: the aiohttp application, thin handlers over the service layers."""
