"""Choosing which candidate molecules to send to quantum chemistry."""
from moldesign.select.greedy import greedy_selection

__all__ = ['greedy_selection']
