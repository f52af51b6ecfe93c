"""The HTTP gateway: authenticate, check, commit the raw body to staging, answer. No warehouse work."""
