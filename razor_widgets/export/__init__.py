"""Export: what ``to_static()`` needs besides each layer kind's static op. The
export's self-check, the Hugging Face config update, tied parameters, and plans (choices as
JSON files)."""
