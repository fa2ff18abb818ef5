"""The bridge between the model and storage/: what is durable, the definitions journal, and recovery."""
