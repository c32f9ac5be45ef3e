"""megatron.tokenizer"""
