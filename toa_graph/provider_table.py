"""The chat-model providers a config may name, as plain data.

Read by the config (to check ``provider:``) and by :mod:`toa_graph.agents.providers` (to
build the chat model); a leaf module, so the config never imports the agents package.
"""

from __future__ import annotations

__all__ = ["PROVIDERS"]

PROVIDERS: dict[str, tuple[str, str | None]] = {
    "anthropic": ("langchain_anthropic", "anthropic"),
    "google_genai": ("langchain_google_genai", "google"),
    "ollama": ("langchain_ollama", "ollama"),
    "mistralai": ("langchain_mistralai", "mistralai"),
    "groq": ("langchain_groq", "groq"),
    "azure_openai": ("langchain_openai", None),
    "bedrock": ("langchain_aws", None),
    "bedrock_converse": ("langchain_aws", None),
    "cohere": ("langchain_cohere", None),
    "deepseek": ("langchain_deepseek", None),
    "fireworks": ("langchain_fireworks", None),
    "google_vertexai": ("langchain_google_vertexai", None),
    "huggingface": ("langchain_huggingface", None),
    "nvidia": ("langchain_nvidia_ai_endpoints", None),
    "openrouter": ("langchain_openrouter", None),
    "perplexity": ("langchain_perplexity", None),
    "together": ("langchain_together", None),
    "xai": ("langchain_xai", None),
}
"""provider -> (the LangChain integration module, toa-graph's pip extra for it, if any)."""
