"""Policies (oracle, random, a Hugging Face model, an OpenAI-compatible endpoint) and the prompts they render."""
