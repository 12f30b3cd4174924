"""Semi-synthetic heterogeneous-preference generator for the reward-model benchmark.

Responses are real English text composed from hand-written fragments along five latent
attributes (length, formality, caution, humour, structure; each at level 0, 0.5 or 1).
Annotators belong to latent groups with ideal points in attribute space (imbalanced group
sizes, some annotators a mixture of two groups, small individual jitter, label noise). Their
utility for a response is the negative weighted squared distance between the response's
attributes and their ideal point (the ideal-point model behind PAL-A, Chen et al. 2024; Coombs 1950),
and their choices follow a Davidson (1970) model with optional ties. In the "null" world every
annotator shares one ideal point, so any group structure a model reports is invented.

The reward models only ever see the text; the generator also returns the attributes, the
true groups and the Bayes-oracle probability of each judgment. Output is deterministic per seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ATTRIBUTES: tuple[str, ...] = ("length", "formality", "caution", "humour", "structure")

# (prompt question, short subject, five key points as verb phrases). The points carry the
# topic content; the attributes decide how many of them are used and how they are dressed.
TOPICS: list[tuple[str, str, tuple[str, ...]]] = [
    ("How should I start running?", "running", ("begin with short, slow runs", "buy shoes that fit your feet well", "rest at least one day between runs", "increase your distance by about ten percent a week", "keep a simple log of every run")),
    ("How do I learn to cook at home?", "home cooking", ("start with three or four simple recipes", "keep a few staple ingredients in the pantry", "sharpen your main kitchen knife", "taste the food while it cooks", "cook larger batches and freeze leftovers")),
    ("What is a good way to save money each month?", "saving money", ("write down everything you spend for a month", "move savings to a separate account on payday", "cancel subscriptions you rarely use", "plan meals before going grocery shopping", "set one clear savings goal")),
    ("How can I sleep better at night?", "sleep", ("go to bed at the same time every night", "keep the bedroom dark and cool", "avoid caffeine after lunch", "put screens away an hour before bed", "get some daylight in the morning")),
    ("How do I start learning a new language?", "language learning", ("practise for fifteen minutes every day", "learn the most common words first", "listen to podcasts for beginners", "speak with a tutor or a partner early", "review vocabulary with spaced repetition")),
    ("How should I prepare for a job interview?", "job interviews", ("research the company and its products", "prepare short stories about past work", "practise answers out loud", "plan the route and arrive early", "prepare two questions for the interviewer")),
    ("How do I keep houseplants alive?", "houseplants", ("check how much light each plant needs", "water only when the top soil is dry", "use pots with drainage holes", "wipe dust off the leaves", "repot plants when the roots fill the pot")),
    ("How can I get better at public speaking?", "public speaking", ("know your opening lines by heart", "rehearse in front of a friend", "slow down and pause between points", "use one clear message per slide", "record yourself and watch it back")),
    ("How do I start a vegetable garden?", "vegetable gardening", ("pick a spot with six hours of sun", "start with easy crops like lettuce and beans", "improve the soil with compost", "water deeply but not every day", "mulch to keep weeds down")),
    ("What is the best way to study for exams?", "exam preparation", ("make a study schedule for each subject", "test yourself instead of rereading", "study in short focused blocks", "explain topics to someone else", "sleep well the night before")),
    ("How can I reduce stress at work?", "workplace stress", ("make a short list of priorities each morning", "take short breaks away from the desk", "say no to tasks you cannot handle", "talk to your manager about workload", "keep work messages out of the evening")),
    ("How do I train a new puppy?", "puppy training", ("reward good behaviour right away", "keep training sessions short", "take the puppy outside after every meal", "use the same commands every time", "socialise the puppy with calm dogs")),
    ("How should I plan a weekend trip?", "weekend trips", ("choose a destination within a few hours", "book a place to stay early", "pack light with one small bag", "plan one main activity per day", "check the weather forecast before leaving")),
    ("How can I write a better essay?", "essay writing", ("state your main argument in the first paragraph", "make an outline before writing", "support each point with evidence", "cut words that add nothing", "read the draft aloud before submitting")),
    ("How do I start investing?", "investing", ("build an emergency fund first", "learn what index funds are", "invest a fixed amount every month", "keep fees as low as possible", "avoid checking prices every day")),
    ("How can I drink more water during the day?", "drinking water", ("carry a reusable bottle", "drink a glass with every meal", "set reminders on your phone", "add lemon or fruit for flavour", "eat watery foods like cucumber")),
    ("How do I organise a messy room?", "tidying a room", ("start with one small corner", "sort items into keep, donate and bin", "give every item a fixed place", "use boxes for small things", "spend ten minutes tidying each evening")),
    ("How do I learn to play the guitar?", "guitar playing", ("learn a few basic chords first", "practise switching between chords slowly", "tune the guitar before every session", "play along with simple songs", "practise a little every day")),
    ("How can I make new friends as an adult?", "making friends", ("join a club around a hobby", "say yes to invitations more often", "suggest a specific plan to meet again", "volunteer for a local cause", "stay in touch with short messages")),
    ("How do I fix a slow computer?", "slow computers", ("restart the machine regularly", "remove programs you do not use", "check for malware", "free up disk space", "add more memory if it is old")),
    ("How should I start meditating?", "meditation", ("sit for five minutes a day", "focus on the feeling of your breath", "use a guided app at first", "meditate at the same time each day", "gently return when your mind wanders")),
    ("How can I eat healthier on a budget?", "healthy eating on a budget", ("buy vegetables that are in season", "cook beans and lentils in bulk", "choose frozen fruit and vegetables", "plan meals around cheap staples", "limit snacks and sugary drinks")),
    ("How do I write a good CV?", "CV writing", ("keep it to two pages at most", "list achievements instead of duties", "tailor it to each job", "use a clean and simple layout", "check spelling carefully")),
    ("How can I become more productive?", "productivity", ("plan the next day the evening before", "do the hardest task first", "turn off notifications while working", "group small tasks together", "review what worked at the end of the week")),
    ("How do I take better photos with my phone?", "phone photography", ("clean the camera lens", "use natural light when possible", "follow the rule of thirds", "tap to focus on the subject", "avoid digital zoom")),
    ("How can I start cycling to work?", "cycling to work", ("plan a quiet route in advance", "get a bike that fits you", "wear a helmet and bright clothes", "keep a change of clothes at work", "check the brakes and tyres every week")),
    ("How do I negotiate a higher salary?", "salary negotiation", ("research typical pay for the role", "list your recent achievements", "name a specific number", "practise the conversation beforehand", "consider benefits as well as salary")),
    ("How can I reduce my screen time?", "screen time", ("check your current daily usage", "set app limits on your phone", "keep the phone out of the bedroom", "replace scrolling with a hobby", "turn the screen to grayscale")),
    ("How do I bake bread at home?", "baking bread", ("start with a simple white loaf", "weigh the ingredients", "let the dough rise in a warm place", "bake with steam for a good crust", "let the bread cool before slicing")),
    ("How should I care for my teeth?", "dental care", ("brush twice a day for two minutes", "floss once a day", "use fluoride toothpaste", "limit sugary snacks", "visit a dentist for regular check-ups")),
]

# Register templates for one key point: casual (formality 0), neutral (0.5), formal (1).
POINT_TEMPLATES: tuple[tuple[str, ...], ...] = (
    ("honestly just {p}, no big deal.", "yeah so {p} and you're basically good.", "tbh the trick is to {p}, easy.", "just {p} lol, works for me."),
    ("A good step is to {p}.", "It helps to {p}.", "Try to {p}.", "You can also {p}."),
    ("It is advisable to {p}.", "One should endeavour to {p}, as this is regarded as best practice.", "It is also recommended that you {p}.", "It would be prudent to {p}."),
)
OPENERS: tuple[tuple[str, ...], ...] = (
    ("Oh nice, {s}!", "Ha, {s}, love it.", "Okay so, {s}."),
    ("Here are some tips on {s}.", "Some ideas about {s}.", "A few thoughts on {s}."),
    ("Thank you for your question regarding {s}.", "The following guidance concerns {s}.", "Please find below my considered advice on {s}."),
)
CAVEATS: tuple[str, ...] = (
    "Please be careful: everyone's situation is different, so check with a qualified professional first.",
    "Be cautious and do not overdo it at the start, since mistakes here can be costly.",
    "If anything feels wrong, stop immediately and seek expert advice.",
    "There are real risks to weigh, so proceed slowly and safely.",
    "Note that this is general information only and may not apply to your circumstances.",
    "Safety first: consider the possible downsides before you commit.",
)
JOKES: tuple[str, ...] = (
    "Fun fact: my cat has stronger opinions on {s} than I do.",
    "Warning: getting good at {s} may cause excessive bragging at parties.",
    "If all else fails, blame the cat. It works for me every time.",
    "Honestly, even a potato could master {s} with enough snacks and encouragement.",
    "Side effects of {s} include smugness and a sudden urge to tell everyone about it.",
    "My first attempt at {s} was so bad that the neighbours still talk about it.",
)
STRUCTURE_HEADERS: tuple[tuple[str, ...], ...] = (
    (),
    ("Tips:", "Main points:", "Things to try:"),
    ("Overview:", "Plan:", "Key steps:"),
)
# Mean-pooled sentence embeddings are nearly blind to how many sentences a text has, so the
# length levels are also realised the way people write short and long answers.
BRIEF_LEADS: tuple[str, ...] = ("In short:", "Quick answer:", "Simply put:", "Briefly:")
LONG_LEADS: tuple[str, ...] = (
    "There is quite a lot to say about {s}, so here is the fuller picture in detail.",
    "Let me walk through {s} thoroughly, covering several aspects one by one.",
    "This deserves a detailed, comprehensive answer, so here is an in-depth look at {s}.",
)
LONG_CONNECTIVES: tuple[str, ...] = ("Additionally,", "Moreover,", "In addition,", "Beyond that,", "On top of that,")
LONG_CLOSERS: tuple[str, ...] = (
    "Taken together, these habits reinforce one another, and the benefits build up over the long run.",
    "To sum up the detailed picture: combine all of the points above and revisit them over the coming months.",
)

# Ideal points in attribute space (length, formality, caution, humour, structure).
GROUP_IDEALS: np.ndarray = np.array(
    [
        [1.0, 1.0, 1.0, 0.0, 1.0],  # thorough professionals: long, formal, careful, structured
        [0.0, 0.0, 0.0, 1.0, 0.0],  # casual jokers: short, chatty, funny, free prose
        [0.0, 1.0, 0.0, 0.0, 1.0],  # concise experts: short, formal, no hedging, structured
        [1.0, 0.0, 1.0, 1.0, 0.0],  # warm storytellers (only used when n_groups=4)
    ]
)
NULL_IDEAL: np.ndarray = np.array([0.75, 0.5, 0.75, 0.25, 0.5])


@dataclass
class SyntheticDataset:
    """Texts, judgments and ground truth of one generated world.

    Index arrays (``prompt_idx``, ``a_idx``, ``b_idx``) point into ``texts``; ``choice`` is
    0 = a preferred, 1 = b preferred, 2 = tie. ``oracle_probs[i]`` is the true (P(a), P(b),
    P(tie)) of judgment i given the annotator's true ideal point, including label noise.
    """

    texts: list[str]
    is_prompt: np.ndarray
    attributes: np.ndarray
    prompt_idx: np.ndarray
    a_idx: np.ndarray
    b_idx: np.ndarray
    annotator_idx: np.ndarray
    choice: np.ndarray
    oracle_probs: np.ndarray
    pair_id: np.ndarray
    annotator_group: np.ndarray
    annotator_mixture: np.ndarray
    annotator_ideal: np.ndarray
    group_ideals: np.ndarray
    world: str
    seed: int
    params: dict = field(default_factory=dict)

    @property
    def n_annotators(self) -> int:
        """Number of annotators in the world."""
        return int(self.annotator_group.shape[0])

    def oracle_correct(self) -> np.ndarray:
        """Boolean per judgment: does the Bayes oracle's preferred side match a non-tie label?"""
        pred_b = self.oracle_probs[:, 1] > self.oracle_probs[:, 0]
        return (self.choice != 2) & (pred_b == (self.choice == 1))


def _compose_response(rng: np.random.Generator, subject: str, points: tuple[str, ...], levels: np.ndarray) -> str:
    """Render one response whose surface form realises the given attribute levels (0, 1, 2)."""
    length, formality, caution, humour, structure = (int(v) for v in levels)
    n_points = (1, 3, 5)[length]
    chosen = rng.choice(len(points), size=n_points, replace=False)
    templates = POINT_TEMPLATES[formality]
    sentences = [templates[rng.integers(len(templates))].format(p=points[i]) for i in chosen]
    sentences = [s[0].upper() + s[1:] for s in sentences]
    if length == 2:  # long answers link their points and announce their thoroughness
        links = rng.choice(len(LONG_CONNECTIVES), size=n_points - 1, replace=False)
        sentences = [sentences[0]] + [f"{LONG_CONNECTIVES[c]} {s[0].lower() + s[1:]}" for c, s in zip(links, sentences[1:], strict=False)]
    opener = OPENERS[formality][rng.integers(3)].format(s=subject)
    caveats = [CAVEATS[i] for i in rng.choice(len(CAVEATS), size=caution, replace=False)]
    jokes = [JOKES[i].format(s=subject) for i in rng.choice(len(JOKES), size=humour, replace=False)]
    if structure == 0:
        body = " ".join(sentences)
    elif structure == 1:
        header = STRUCTURE_HEADERS[1][rng.integers(3)]
        body = header + "\n" + "\n".join(f"- {s}" for s in sentences)
    else:
        header = STRUCTURE_HEADERS[2][rng.integers(3)]
        body = header + "\n" + "\n".join(f"Step {i + 1}: {s}" for i, s in enumerate(sentences))
    parts = [opener]
    if length == 0:
        parts.append(BRIEF_LEADS[rng.integers(len(BRIEF_LEADS))])
    if length == 2:
        parts.append(LONG_LEADS[rng.integers(len(LONG_LEADS))].format(s=subject))
    parts += [body, *caveats, *jokes]
    if length == 2:
        parts.append(LONG_CLOSERS[rng.integers(len(LONG_CLOSERS))])
    if structure == 2:
        parts.append("Summary: follow the steps above in order.")
    return ("\n" if structure else " ").join(parts)


def generate(
    seed: int = 0,
    *,
    world: str = "groups",
    n_annotators: int = 200,
    judgments_per_annotator: int = 120,
    n_prompts: int = 30,
    responses_per_prompt: int = 16,
    n_groups: int = 3,
    group_sizes: tuple[float, ...] = (0.5, 0.3, 0.2, 0.15),
    mixed_fraction: float = 0.15,
    jitter: float = 0.05,
    beta: float = 3.0,
    label_noise: float = 0.05,
    tie_nu: float = 0.2,
) -> SyntheticDataset:
    """Generate one world of texts, annotators and judgments (deterministic per ``seed``).

    The utility of annotator u for response x is ``-beta * ||attr(x) - ideal_u||^2`` (PAL
    ideal-point model, as in PAL-A of Chen et al. 2024). A judgment is, with probability
    ``label_noise``, a fair coin between a and b; otherwise it follows Davidson's (1970) model
    ``P(a) : P(b) : P(tie) = e^{d/2} : e^{-d/2} : nu`` with ``d = U_u(a) - U_u(b)``.

    ``world="null"`` gives every annotator the same ideal point (group label 0 for all).
    Prompts larger than the topic bank reuse topics with fresh responses.
    """
    if world not in ("groups", "null"):
        raise ValueError(f"world must be 'groups' or 'null', got {world!r}")
    if not 1 <= n_groups <= GROUP_IDEALS.shape[0]:
        raise ValueError(f"n_groups must be in 1..{GROUP_IDEALS.shape[0]}")
    rng = np.random.default_rng(seed)
    n_attr = len(ATTRIBUTES)

    texts: list[str] = []
    is_prompt: list[bool] = []
    attrs: list[np.ndarray] = []
    prompt_text: list[int] = []
    responses: list[np.ndarray] = []
    seen_texts: set[str] = set()
    for p in range(n_prompts):
        question, subject, points = TOPICS[p % len(TOPICS)]
        if p >= len(TOPICS):  # keep prompt texts unique when topics repeat
            question = f"{question} (variant {p // len(TOPICS) + 1})"
        prompt_text.append(len(texts))
        texts.append(question)
        is_prompt.append(True)
        attrs.append(np.zeros(n_attr))
        # Cover all levels evenly so every attribute varies within each prompt.
        level_cols = [rng.permutation(np.resize(np.arange(3), responses_per_prompt)) for _ in range(n_attr)]
        levels = np.stack(level_cols, axis=1)
        idx = []
        for r in range(responses_per_prompt):
            for _attempt in range(20):
                text = _compose_response(rng, subject, points, levels[r])
                if text not in seen_texts:
                    break
            seen_texts.add(text)
            idx.append(len(texts))
            texts.append(text)
            is_prompt.append(False)
            attrs.append(levels[r] / 2.0)
        responses.append(np.array(idx))
    attributes = np.stack(attrs)

    # Annotators: imbalanced groups, some mixtures of two groups, small individual jitter.
    if world == "null":
        n_groups_eff = 1
        ideals = NULL_IDEAL[None, :]
        groups = np.zeros(n_annotators, dtype=np.int64)
    else:
        n_groups_eff = n_groups
        ideals = GROUP_IDEALS[:n_groups]
        sizes = np.asarray(group_sizes[:n_groups], dtype=float)
        sizes = sizes / sizes.sum()
        counts = np.floor(sizes * n_annotators).astype(int)
        counts[0] += n_annotators - counts.sum()
        groups = rng.permutation(np.repeat(np.arange(n_groups), counts))
    mixture = np.zeros((n_annotators, n_groups_eff))
    mixture[np.arange(n_annotators), groups] = 1.0
    if n_groups_eff > 1:
        mixed = rng.random(n_annotators) < mixed_fraction
        for u in np.flatnonzero(mixed):
            other = rng.choice([g for g in range(n_groups_eff) if g != groups[u]])
            lam = rng.uniform(0.6, 0.85)
            mixture[u, groups[u]] = lam
            mixture[u, other] = 1.0 - lam
    ideal_u = mixture @ ideals + rng.normal(0.0, jitter, size=(n_annotators, n_attr))

    # Judgments: random prompt, random ordered pair of its responses.
    n = n_annotators * judgments_per_annotator
    ann = np.repeat(np.arange(n_annotators), judgments_per_annotator)
    pr = rng.integers(n_prompts, size=n)
    i = rng.integers(responses_per_prompt, size=n)
    j = (i + rng.integers(1, responses_per_prompt, size=n)) % responses_per_prompt
    resp = np.stack(responses)
    a_idx, b_idx = resp[pr, i], resp[pr, j]
    prompt_idx = np.asarray(prompt_text)[pr]
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    pair_id = (pr * responses_per_prompt + lo) * responses_per_prompt + hi

    util_a = -beta * ((attributes[a_idx] - ideal_u[ann]) ** 2).sum(1)
    util_b = -beta * ((attributes[b_idx] - ideal_u[ann]) ** 2).sum(1)
    d = util_a - util_b
    logits = np.stack([d / 2, -d / 2, np.full(n, np.log(tie_nu) if tie_nu > 0 else -np.inf)], axis=1)
    logits -= logits.max(1, keepdims=True)
    davidson = np.exp(logits)
    davidson /= davidson.sum(1, keepdims=True)
    noise = np.array([0.5, 0.5, 0.0])
    oracle = (1 - label_noise) * davidson + label_noise * noise
    u = rng.random(n)
    choice = (u[:, None] > np.cumsum(oracle, axis=1)).sum(1).clip(0, 2).astype(np.int64)

    return SyntheticDataset(
        texts=texts,
        is_prompt=np.asarray(is_prompt),
        attributes=attributes,
        prompt_idx=prompt_idx,
        a_idx=a_idx,
        b_idx=b_idx,
        annotator_idx=ann,
        choice=choice,
        oracle_probs=oracle,
        pair_id=pair_id,
        annotator_group=groups,
        annotator_mixture=mixture,
        annotator_ideal=ideal_u,
        group_ideals=ideals,
        world=world,
        seed=seed,
        params=dict(
            n_annotators=n_annotators, judgments_per_annotator=judgments_per_annotator, n_prompts=n_prompts,
            responses_per_prompt=responses_per_prompt, n_groups=n_groups_eff, mixed_fraction=mixed_fraction,
            jitter=jitter, beta=beta, label_noise=label_noise, tie_nu=tie_nu,
        ),
    )
