"""megatron.data_efficiency"""
