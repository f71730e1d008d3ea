"""Task data: the synthetic arithmetic task (`synthetic`); loading and prompts sit beside it."""
