"""The standard inference protocols: Open Inference Protocol (KServe V2, Triton binary tensors), TF Serving REST."""
