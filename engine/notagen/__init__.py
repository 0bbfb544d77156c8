"""NotaGen: patchilizer, hierarchical GPT-2 model, generation, checkpoint loading.

* `config.py`, `patchilizer.py`, `model.py`: the model, its text encoding and its checkpoints.
* `prompts.py`, `options.py`: prompts and generation settings (torch-free).
* `generate.py`: `NotagenGenerator`, the facade the app calls, and checkpoint lookup.
* `batch_engine.py`: the sampled, batched, streaming decoding loop with bar resampling and retries,
  on `kv_buffers.py` (the patch decoder's preallocated KV cache) and `sampling.py` (top-k/top-p/temperature).
* `finish.py`: generation contexts, and generated text to a `ScoreDocument` (new pieces, continuations).
* `events.py`: the events and result a generation call reports.
* `reference.py`: the greedy reference driver, checked against the official code.
"""
