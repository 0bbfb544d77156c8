"""NotaGen: patchilizer, hierarchical GPT-2 model, generation, checkpoint loading."""
