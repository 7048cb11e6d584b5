"""The answers app: questions in, spoken answers out."""
