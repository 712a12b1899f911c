"""Access control: identities, credentials, scope maps, tokens and the decisions made from them."""
