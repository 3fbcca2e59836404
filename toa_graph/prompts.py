"""Prompts, as constants only. Written for toa_graph (the reference code's files were missing).

Every template puts the question before any earlier answer, so servers with prefix caching
reuse the shared prefix across the many calls made for one prompt.
"""

REFINE_TEMPLATE = """\
Here is a question, followed by an earlier answer to it.

## Question
{question}

## Earlier answer
{answer}

Write an improved answer to the question. Keep what the earlier answer gets right, fix \
what is wrong, fill in what is missing, and make it clearer. Reply with the improved \
answer only, with no remarks about the earlier one."""

AGGREGATE_SYSTEM = """\
You have been provided with a set of responses from various models to the latest user \
query. Your task is to synthesize these responses into a single, high-quality response. \
It is crucial to critically evaluate the information provided in these responses, \
recognizing that some of it may be biased or incorrect. Your response should not simply \
replicate the given answers but should offer a refined, accurate, and comprehensive reply \
to the instruction. Ensure your response is well-structured, coherent, and adheres to the \
highest standards of accuracy and reliability.

Responses from models:
{references}"""
"""MoA's aggregate-and-synthesize prompt (the MoA paper's, as its code and the TOA code use
it), placed in the system message; the user turn stays the original query."""

REFERENCE_BLOCK = "## Response {index}:\n{text}"
"""One reference answer, as the TOA reference code's ``aggregate_responses`` numbers them."""

# ---- Debate & Reflect (structure and wording after D&R's ``templates.py``)

DEBATE_FORMAT_HINTS = {
    "numeric": "Only use a single numeric value as your final answer. ",
    "choice": "Only choose the letter (A, B, C, ...) of your choice as your final answer. ",
    "math": "Only use a mathematical expression as your final answer and wrap the final "
    "answer with $. ",
    "free": "",
}
"""Task type -> the answer format hint (D&R's ``choice_prompts``: GSM8K, ARC/MMLU-Pro, MATH)."""

DEBATE_ANSWER_TEMPLATE = """\
### Instruction
You are a helpful assistant aiming to answer the following question with reasoning.
Please output in the following format:
```
### Answer
<your step-by-step reasoning>
Final answer: <your final answer>
```
{hint}Please keep your output concise and limit it to 500 words. Use the most short \
reasoning to get the correct answer. Do not output unrelated content!

### Question
{question}
"""
"""Round 0 (and the D&R SFT export's prompt): the plain answer template."""

DEBATE_ROUND_TEMPLATE = """\
### Instruction
You are a helpful assistant aiming to answer the following question with reasoning.
You are debating the input question with other agents. You are provided with all answers \
from the last round, along with their self-reflections and the feedback received. Please \
carefully consider these answers and output a new answer.
Please output in the following format:
```
### Answer
<your step-by-step reasoning>
Final answer: <your final answer>
```
{hint}Please keep your output concise and limit it to 500 words. Use the most short \
reasoning to get the correct answer. Do not output unrelated content! Do not explicitly \
mention other agents; instead, internally consider their answers.

### Question
{question}

### Last Round Answers
{answers}
"""
"""Rounds 1..3: ONE prompt shared by every agent (and the T-DPO prompt of that round)."""

DEBATE_ROUND_BLOCK = """\
Answer {index}:
{answer}

Self-reflection: {reflection}

Feedback:
{feedback}

"""
"""One last-round answer in the shared prompt (unnamed), with its reflection and feedback."""

DEBATE_FEEDBACK_TEMPLATE = """\
### Instruction
You are a helpful assistant aiming to provide a feedback to other agents.
Congratulation! You answered the question correctly. Based on your correct answer, please \
help another agent who answered incorrectly. You should provide feedback by pointing out \
the potential incorrect knowledge, faulty reasoning or format errors in its response. \
Please check if its incorrect final answer has any formatting errors compared to the \
correct answer.
Please output in the following format:
```
### Feedback
<your feedback>
```
Only output your feedback. Please keep your output concise and limit it to 500 words. \
Provide your most concise feedback. Do not output a new answer.

### Question
{question}

### Your Correct Answer
{own}

### Incorrect Answer from Another Agent
{other}
"""
"""Round end: a correct agent's feedback to one incorrect agent (pair by pair)."""

DEBATE_REFLECTION_TEMPLATE = """\
### Instruction
You are a helpful assistant aiming to provide a feedback to yourself.
Unfortunately, your previous answer to the question was incorrect. Given the correct final \
answer, please reflect on it and provide feedback on your incorrect response. You need to \
identify the potential incorrect knowledge, faulty reasoning or format errors in your \
incorrect response. Please check if your incorrect final answer has any formatting errors \
compared to the correct answer.
Please output in the following format:
```
### Feedback
<your feedback>
```
You don't need to apologize.
Only output your feedback. Please keep your output concise and limit it to 500 words. \
Provide your most concise feedback. Do not output a new answer.

### Question
{question}

### Correct Final Answer
{gold}

### Your Incorrect Answer
{own}
"""
"""Round end: an incorrect agent's self-reflection, given the correct final answer."""

DEBATE_OPEN_REFLECTION_TEMPLATE = """\
### Instruction
You are a helpful assistant aiming to provide a feedback to yourself.
Please check the correctness of your answer, reflect on it, and provide feedback on your \
potential incorrect response. You need to identify the potential incorrect knowledge, \
faulty reasoning or format errors in your incorrect response.
Please output in the following format:
```
### Feedback
<your feedback>
```
You don't need to apologize.
Only output your feedback. Please keep your output concise and limit it to 500 words. \
Provide your most concise feedback. Do not output a new answer.

### Question
{question}

### Your Answer
{own}
"""
"""Our extension (open prompts, no agent judged correct): a reflection without a gold answer."""
