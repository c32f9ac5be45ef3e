"""megatron.training"""
