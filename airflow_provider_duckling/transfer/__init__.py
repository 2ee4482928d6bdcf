"""The work a task does with the two engines: the export statement, the lake's atomic swap, maintenance."""
