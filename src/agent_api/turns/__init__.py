"""The life of a turn: starting it, running it on the agent runtime, recording what the agent says, and its costs."""
