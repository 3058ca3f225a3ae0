"""The smoke test's fixed text: bench's smoke chat and the GGUF export check speak the same
conversation, so an export that passes its check passes the same turns in bench."""

SYSTEM = "You are a helpful assistant. Keep your answers short."
# One code-review turn, one that needs the previous answer, one Chinese turn (the seed deployments
# checked "你好" and a code review by eye).
TURNS = (
    "Review this Python function and point out the bug in one or two sentences:\n\n"
    "```python\ndef average(numbers):\n    total = 0\n    for n in numbers:\n        total += n\n"
    "    return total / len(numbers) + 1\n```",
    "Now write the corrected function.",
    "你好！你是谁？",
)
# The completion smoke's prompts: prose, code and Chinese, as the chat's turns; each is continued
# from scratch (a base model has no conversation to carry).
PROMPTS = (
    "The capital of France is Paris. The capital of Germany is",
    'def average(numbers):\n    """Return the mean of a list of numbers."""\n',
    "北京是中国的首都。上海是",
)
CHAT, COMPLETION = "chat", "completion"
TITLES = {CHAT: "smoke chat", COMPLETION: "completion smoke (no chat template)"}
