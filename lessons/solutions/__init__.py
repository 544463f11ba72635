"""Answers to the lessons' "Try this" items, one file per lesson (run by tests/test_solutions.py)."""
