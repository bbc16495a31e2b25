"""Built-in connector kinds and the shared HTTP fetcher. No web or store code here."""
