"""Downstream tasks on pretrained checkpoints: GLUE and RACE finetuning (``tasks/main.py``)."""
