"""megatron.model"""
