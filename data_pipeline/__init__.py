"""FuseChat-3.0 data construction: select prompts, sample source models (vLLM), score (reward model), verify (math,
code in a sandbox), build SFT and DPO sets, report. See `python -m data_pipeline --help`."""
