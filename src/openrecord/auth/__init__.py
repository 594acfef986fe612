"""Authorization: SMART scopes (and, with issue 5, the OAuth server, tokens, accounts)."""
