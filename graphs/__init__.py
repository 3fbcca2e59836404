"""Thin modules exposing compiled graphs for ``langgraph.json`` (LangGraph Studio)."""
