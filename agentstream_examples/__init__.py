"""Agents defined the way an app's own agents are: the travel planner and the adapter examples."""
