"""Consistent Self-Attention: the attention processor, its explicit state, and the character bank."""
