"""The bundled small models: safetensors weights with a model card each."""
