"""RACE finetuning: reader (data.py)."""
