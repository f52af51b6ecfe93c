"""Customer.io warehouse loader: webhooks in, RudderStack-shaped tables out, exactly once."""

__version__ = "0.1.0"
