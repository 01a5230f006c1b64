"""Development tools, not deployed: development host, scripted model, tool stand-ins, launcher."""
