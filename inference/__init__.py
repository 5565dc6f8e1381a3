"""Generation engines: native (KV cache, batched) and the vLLM adapter, behind one interface."""
