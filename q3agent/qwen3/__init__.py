"""Everything Qwen3-specific and pure: models, chat format, prompt ids, parsing, thinking."""
