"""Answer filters: look at a finished answer and decline to show it when the model was unsure."""
