"""Training and fine-tuning VisionEncoderDecoder line readers on ground truth (``pisar train``)."""
