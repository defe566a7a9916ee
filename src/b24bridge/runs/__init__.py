"""The run log: every robot call with its inputs, outbound calls and outcome; replay."""
