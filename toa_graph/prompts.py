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
You have been given a user question and several answers to it from other assistants. \
Your task is to synthesize them into one answer of the highest quality. Evaluate them \
critically: some may be biased or wrong. Do not simply copy one of them; write a refined, \
accurate and complete reply to the question.

Answers from other assistants:
{references}"""

REFERENCE_BLOCK = "## Response {index}\n{text}"

DEBATE_OPEN_TEMPLATE = """\
{question}

Reason step by step, then end with a line "Final answer: ..." stating your answer."""

DEBATE_ANSWER_BLOCK = "### Agent {index}\n{text}"

DEBATE_CONTEXT_TEMPLATE = """\
## Question
{question}

## Answers from the previous debate round
{answers}

Consider these answers as additional evidence. Point out errors where you see them, then \
give your answer. End with a line "Final answer: ..." stating it."""
"""The shared context of one debate round, as the prompt of its T-DPO pairs."""

DEBATE_TEMPLATE = """\
## Question
{question}

## Your previous answer
{own}

## Answers from the other agents
{others}

Consider the other agents' reasoning as additional evidence. Point out errors where you \
see them, then give your updated answer. End with a line "Final answer: ..." stating it."""

CRITIC_TEMPLATE = """\
## Question
{question}

## Answers under review
{answers}

You are a strict teacher. For each answer, say briefly whether its reasoning and final \
result are correct and what exactly is wrong or missing. Do not write a full solution."""

REFLECT_TEMPLATE = """\
## Question
{question}

## Your previous answer (reviewed as Agent {index})
{own}

## Teacher feedback
{feedback}

Reflect on the feedback, correct your reasoning where it is wrong, and give your final \
answer. End with a line "Final answer: ..." stating it."""
