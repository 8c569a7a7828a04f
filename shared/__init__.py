"""Code every Igris function may import: the Lambda layer. Imports nothing from functions/."""
