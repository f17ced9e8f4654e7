// Synthetic GGUF model writer (gen-model). Placeholder until it lands.
