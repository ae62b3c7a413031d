"""botkit: WhatsApp chatbots on the Devino WhatsApp API."""

__version__ = "0.1.0"
