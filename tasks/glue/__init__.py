"""GLUE finetuning: readers (data.py)."""
