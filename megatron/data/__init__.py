"""megatron.data"""
