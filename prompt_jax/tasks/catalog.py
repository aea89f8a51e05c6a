"""The registered tasks: the classification tasks of Prompt-Transferability (Su et al. 2022)
that can be trained and evaluated here, plus Rotten Tomatoes, RTE, CB, AG News and TREC.

Every task reads its train and validation splits from the local files (../shared/data), or from
TFDS: mnli, qnli, snli, qqp, movie_rationales and ag_news lack local train files, so they train
only with `$PROMPT_JAX_SOURCE=tfds` (online, or with the dataset prepared under
$TFDS_DATA_DIR); their error for a missing local file says so. The paper's generation tasks
SQuAD, NQ-Open and SAMSum are registered on the parts of them available offline (below);
Multi-News is not.
ETHICS deontology and justice are, on their own splits (validation = the release's test, test = its
adversarial hard test). TweetEval's classification tasks are (emoji aside: its 20 labels are
emoji); ../shared/data lacks its sentiment task's train text, so that one is an evaluation
target only here. A dataset of one's own:
`prompt_jax.tasks.define_file_task`.

Local file layouts follow each public release (GLUE tsv, SuperGLUE jsonl, the MSR, SemEval,
TREC and ERASER releases); the copies in ../shared/data use these layouts. TFDS label names are
those of the builders' ClassLabel features.
"""

from __future__ import annotations

from prompt_jax.tasks.registry import (
    CARVED,
    SPLITS,
    LocalSource,
    TaskSpec,
    TfdsSource,
    register,
)

ACC = ("accuracy",)
ACC_F1 = ("accuracy", "f1")

SENT2 = ("negative", "positive")
SENT3 = ("negative", "neutral", "positive")
NLI3 = ("entailment", "neutral", "contradiction")
NLI2 = ("entailment", "not_entailment")


def _names(labels: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    return tuple((label, i) for i, label in enumerate(labels))


def _digits(n: int, start: int = 0) -> tuple[tuple[str, int], ...]:
    return tuple((str(i + start), i) for i in range(n))


def _tfds_carved(name: str, **fields) -> TfdsSource:
    """A TFDS builder with train and test only: validation is the last 10% of train."""
    return TfdsSource(name, (("train", "train[:90%]"), ("validation", "train[90%:]"),
                             ("test", "test")), **fields)


def _review(t5_prefix: str, t5_field: str = "sentence") -> tuple[tuple[str, str], ...]:
    return (("t5", f"{t5_prefix} {t5_field}: {{text_a}}"),
            ("causal", "Review: {text_a}\nSentiment:"))


def _nli(t5: str) -> tuple[tuple[str, str], ...]:
    return (("t5", t5), ("causal", "Premise: {text_a}\nHypothesis: {text_b}\n"
                                   "Does the premise entail the hypothesis? Answer:"))


def _absa(name: str, prefix: str) -> TaskSpec:
    return TaskSpec(
        name=name, family="sentiment", labels=SENT3, verbalizers=SENT3, t5_verbalizers=SENT3,
        metric_names=ACC, pair=True, label_aliases=(("-1", 0), ("0", 1), ("1", 2)) + _names(SENT3),
        templates=(("t5", f"{name} sentence: {{text_a}} aspect: {{text_b}}"),
                   ("causal", "Review: {text_a}\nAspect: {text_b}\nSentiment:")),
        local=LocalSource("absa", (("train", (f"semeval14_absa/{prefix}_Train.xml.seg",)),
                                   ("validation", CARVED),
                                   ("test", (f"semeval14_absa/{prefix}_Test_Gold.xml.seg",)))),
        tfds=None, description=f"SemEval-2014 {name} aspect polarity")


def _tweeteval(name: str, folder: str, labels: tuple[str, ...], question: str,
               verbalizers: tuple[str, ...] | None = None, family: str = "") -> TaskSpec:
    """A TweetEval task (Barbieri et al. 2020): `<folder>/<split>_{text,labels}.txt`, labels
    0..n-1 in `mapping.txt` order."""
    files = {"train": "train", "validation": "val", "test": "test"}  # TweetEval's names
    verbalizers = verbalizers or labels
    return TaskSpec(
        name=name, family=family or name.removeprefix("tweet_").split("_")[0], labels=labels,
        verbalizers=verbalizers, t5_verbalizers=labels, metric_names=ACC, pair=False,
        label_aliases=_digits(len(labels)) + _names(labels),
        templates=(("t5", f"{name} tweet: {{text_a}}"),
                   ("causal", f"Tweet: {{text_a}}\n{question}")),
        local=LocalSource("lines", tuple(
            (split, (f"tweeteval/{folder}/{files[split]}_text.txt",
                     f"tweeteval/{folder}/{files[split]}_labels.txt")) for split in SPLITS)),
        tfds=None, description=f"TweetEval {folder.replace('/', ' ')}")


TWEET_STANCE_TARGETS = {"abortion": "abortion", "atheism": "atheism",
                        "climate": "climate change", "feminist": "feminism",
                        "hillary": "Hillary Clinton"}

TASKS = [
    # --- sentiment ---
    TaskSpec(
        name="sst2", family="sentiment", labels=SENT2, verbalizers=SENT2, t5_verbalizers=SENT2,
        metric_names=ACC, templates=_review("sst2"), pair=False,
        label_aliases=_digits(2) + _names(SENT2),
        local=LocalSource("tsv", (("train", ("glue_sst2/train.tsv",)),
                                  ("validation", ("glue_sst2/validation.tsv",))),
                          (("text_a", "sentence"), ("label", "label"))),
        tfds=TfdsSource("glue/sst2", (("train", "train"), ("validation", "validation")),
                        "sentence", label="label", label_names=SENT2),
        description="SST-2 (GLUE)"),
    TaskSpec(
        name="imdb", family="sentiment", labels=SENT2, verbalizers=SENT2, t5_verbalizers=SENT2,
        metric_names=ACC, templates=_review("imdb", "review"), pair=False,
        label_aliases=_digits(2) + _names(SENT2) + (("neg", 0), ("pos", 1)),
        local=LocalSource("jsonl", (("train", ("imdb/train.jsonl.gz",)), ("validation", CARVED),
                                    ("test", ("imdb/test.jsonl.gz",))),
                          (("text_a", "text"), ("label", "label"))),
        tfds=_tfds_carved("imdb_reviews", text_a="text", label="label",
                          label_names=("neg", "pos")),
        description="IMDB reviews (aclImdb v1)"),
    _absa("laptop", "Laptops"),
    _absa("restaurant", "Restaurants"),
    TaskSpec(
        name="movie_rationales", family="sentiment", labels=SENT2, verbalizers=SENT2,
        t5_verbalizers=SENT2, metric_names=ACC, templates=_review("movie_rationales", "review"),
        pair=False, label_aliases=_names(SENT2) + (("NEG", 0), ("POS", 1)),
        local=LocalSource("eraser", (("train", ("movies/train.jsonl",)),
                                     ("validation", ("movies/val.jsonl",)),
                                     ("test", ("movies/test.jsonl",)))),
        tfds=TfdsSource("movie_rationales", (("train", "train"), ("validation", "validation"),
                                             ("test", "test")),
                        "review", label="label", label_names=("NEG", "POS")),
        description="ERASER movie reviews (rationales release)"),
    # --- NLI ---
    TaskSpec(
        name="mnli", family="nli", labels=NLI3, verbalizers=("yes", "maybe", "no"),
        t5_verbalizers=NLI3, metric_names=ACC, pair=True, label_aliases=_names(NLI3),
        templates=_nli("mnli hypothesis: {text_b} premise: {text_a}"),
        local=LocalSource("jsonl", (("train", ("mnli/train.jsonl",)),
                                    ("validation", ("mnli/dev.jsonl",))),
                          (("text_a", "premise"), ("text_b", "hypothesis"), ("label", "label"))),
        tfds=TfdsSource("glue/mnli", (("train", "train"), ("validation", "validation_matched")),
                        "premise", "hypothesis", "label", NLI3),
        description="MultiNLI (validation = dev-matched)"),
    TaskSpec(
        name="qnli", family="nli", labels=NLI2, verbalizers=("yes", "no"), t5_verbalizers=NLI2,
        metric_names=ACC, pair=True, label_aliases=_names(NLI2),
        templates=(("t5", "qnli question: {text_a} sentence: {text_b}"),
                   ("causal", "Question: {text_a}\nSentence: {text_b}\n"
                              "Does the sentence answer the question? Answer:")),
        local=LocalSource("tsv", (("train", ("glue_qnli/train.tsv",)),
                                  ("validation", ("glue_qnli/validation.tsv",))),
                          (("text_a", "question"), ("text_b", "sentence"), ("label", "label"))),
        tfds=TfdsSource("glue/qnli", (("train", "train"), ("validation", "validation")),
                        "question", "sentence", "label", NLI2),
        description="QNLI (GLUE)"),
    TaskSpec(
        name="snli", family="nli", labels=NLI3, verbalizers=("yes", "maybe", "no"),
        t5_verbalizers=NLI3, metric_names=ACC, pair=True, label_aliases=_names(NLI3),
        templates=_nli("snli hypothesis: {text_b} premise: {text_a}"),
        local=LocalSource("jsonl", (("train", ("snli/train.jsonl",)),
                                    ("validation", ("snli/dev.jsonl",)),
                                    ("test", ("snli/test.jsonl",))),
                          (("text_a", "premise"), ("text_b", "hypothesis"), ("label", "label"))),
        tfds=TfdsSource("snli", (("train", "train"), ("validation", "validation"),
                                 ("test", "test")), "premise", "hypothesis", "label", NLI3),
        description="SNLI"),
    # --- paraphrase ---
    TaskSpec(
        name="qqp", family="paraphrase", labels=("not_duplicate", "duplicate"),
        verbalizers=("no", "yes"), t5_verbalizers=("not_duplicate", "duplicate"),
        metric_names=ACC_F1, pair=True,
        label_aliases=_digits(2) + _names(("not_duplicate", "duplicate")),
        templates=(("t5", "qqp question1: {text_a} question2: {text_b}"),
                   ("causal", "Question 1: {text_a}\nQuestion 2: {text_b}\n"
                              "Do both questions ask the same thing? Answer:")),
        local=LocalSource("tsv", (("train", ("glue_qqp/train.tsv",)),
                                  ("validation", ("glue_qqp/dev.tsv",))),
                          (("text_a", "question1"), ("text_b", "question2"),
                           ("label", "is_duplicate"))),
        tfds=TfdsSource("glue/qqp", (("train", "train"), ("validation", "validation")),
                        "question1", "question2", "label", ("not_duplicate", "duplicate")),
        description="Quora Question Pairs (GLUE)"),
    TaskSpec(
        name="mrpc", family="paraphrase", labels=("not_equivalent", "equivalent"),
        verbalizers=("no", "yes"), t5_verbalizers=("not_equivalent", "equivalent"),
        metric_names=ACC_F1, pair=True,
        label_aliases=_digits(2) + _names(("not_equivalent", "equivalent")),
        templates=(("t5", "mrpc sentence1: {text_a} sentence2: {text_b}"),
                   ("causal", "Sentence 1: {text_a}\nSentence 2: {text_b}\n"
                              "Do both sentences mean the same thing? Answer:")),
        local=LocalSource("msr", (("train", ("msr_paraphrase/msr_paraphrase_train.txt",)),
                                  ("validation", CARVED),
                                  ("test", ("msr_paraphrase/msr_paraphrase_test.txt",)))),
        tfds=TfdsSource("glue/mrpc", (("train", "train"), ("validation", "validation")),
                        "sentence1", "sentence2", "label", ("not_equivalent", "equivalent")),
        description="MRPC (MSR paraphrase corpus)"),
    # --- the five extra tasks ---
    TaskSpec(
        name="rotten_tomatoes", family="sentiment", labels=SENT2, verbalizers=SENT2,
        t5_verbalizers=SENT2, metric_names=ACC, templates=_review("rotten_tomatoes"),
        pair=False, label_aliases=_names(SENT2),
        local=LocalSource("jsonl", (("train", ("rotten_tomatoes/train.jsonl",)),
                                    ("validation", CARVED),
                                    ("test", ("rotten_tomatoes/test.jsonl",))),
                          (("text_a", "input"), ("label", "output"))),
        tfds=None, description="Rotten Tomatoes movie review polarity"),
    TaskSpec(
        name="rte", family="nli", labels=NLI2, verbalizers=("yes", "no"), t5_verbalizers=NLI2,
        metric_names=ACC, pair=True, label_aliases=_names(NLI2),
        templates=_nli("rte sentence1: {text_a} sentence2: {text_b}"),
        local=LocalSource("jsonl", (("train", ("superglue_rte/train.jsonl",)),
                                    ("validation", ("superglue_rte/val.jsonl",))),
                          (("text_a", "premise"), ("text_b", "hypothesis"), ("label", "label"))),
        tfds=TfdsSource("super_glue/rte", (("train", "train"), ("validation", "validation")),
                        "premise", "hypothesis", "label", NLI2),
        description="RTE (SuperGLUE)"),
    TaskSpec(
        name="cb", family="nli", labels=NLI3, verbalizers=("yes", "maybe", "no"),
        t5_verbalizers=NLI3, metric_names=ACC, pair=True, label_aliases=_names(NLI3),
        templates=_nli("cb hypothesis: {text_b} premise: {text_a}"),
        local=LocalSource("jsonl", (("train", ("superglue_cb/train.jsonl",)),
                                    ("validation", ("superglue_cb/val.jsonl",))),
                          (("text_a", "premise"), ("text_b", "hypothesis"), ("label", "label"))),
        tfds=TfdsSource("super_glue/cb", (("train", "train"), ("validation", "validation")),
                        "premise", "hypothesis", "label",
                        ("entailment", "contradiction", "neutral")),
        description="CommitmentBank (SuperGLUE)"),
    TaskSpec(
        name="ag_news", family="topic", labels=("World", "Sports", "Business", "Sci/Tech"),
        verbalizers=("world", "sports", "business", "science"),
        t5_verbalizers=("world", "sports", "business", "science"), metric_names=ACC, pair=True,
        label_aliases=_digits(4, start=1) + _names(("World", "Sports", "Business", "Sci/Tech")),
        templates=(("t5", "ag_news title: {text_a} description: {text_b}"),
                   ("causal", "Title: {text_a}\nArticle: {text_b}\nTopic:")),
        local=LocalSource("csv", (("train", ("ag_news/train.csv",)), ("validation", CARVED),
                                  ("test", ("ag_news/test.csv",))),
                          (("text_a", "Title"), ("text_b", "Description"),
                           ("label", "Class Index"))),
        tfds=_tfds_carved("ag_news_subset", text_a="title", text_b="description", label="label",
                          label_names=("World", "Sports", "Business", "Sci/Tech")),
        description="AG News topics (csv labels 1-4)"),
    TaskSpec(
        name="trec", family="question", labels=("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"),
        verbalizers=("abbreviation", "description", "entity", "human", "location", "number"),
        t5_verbalizers=("abbreviation", "description", "entity", "human", "location", "number"),
        metric_names=ACC, pair=False,
        label_aliases=_names(("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")),
        templates=(("t5", "trec question: {text_a}"),
                   ("causal", "Question: {text_a}\nAnswer type:")),
        local=LocalSource("prefixed", (("train", ("trec/train.txt",)), ("validation", CARVED),
                                       ("test", ("trec/test.txt",))), (("sep", ":"),)),
        tfds=_tfds_carved("trec", text_a="text", label="label-coarse",
                          label_names=("DESC", "ENTY", "ABBR", "HUM", "NUM", "LOC")),
        description="TREC question type (coarse)"),
]

# --- TweetEval ---
TASKS += [
    _tweeteval("tweet_sentiment", "sentiment", SENT3, "Sentiment:", family="sentiment"),
    _tweeteval("tweet_emotion", "emotion", ("anger", "joy", "optimism", "sadness"), "Emotion:"),
    _tweeteval("tweet_hate", "hate", ("not-hate", "hate"),
               "Is this tweet hateful? Answer:", ("no", "yes")),
    _tweeteval("tweet_irony", "irony", ("non_irony", "irony"), "Is this tweet ironic? Answer:",
               ("no", "yes")),
    _tweeteval("tweet_offensive", "offensive", ("not-offensive", "offensive"),
               "Is this tweet offensive? Answer:", ("no", "yes")),
    *(_tweeteval(f"tweet_stance_{target}", f"stance/{target}", ("none", "against", "favor"),
                 f"Stance on {topic}:", family="stance")
      for target, topic in TWEET_STANCE_TARGETS.items()),
]

# --- ETHICS (Hendrycks et al. 2021): the paper's ethics family ---
# Each trains on its train file and scores the release's test file as `validation`; the
# adversarial hard test set is the `test` split, a second evaluation split.
ETHICS = ("unacceptable", "acceptable")


def _ethics(name: str, t5: str, causal: str, pair: bool) -> TaskSpec:
    part = name.removeprefix("ethics_")
    fields = (("text_a", "scenario"),) + ((("text_b", "excuse"),) if pair else ()) + (
        ("label", "label"),)
    return TaskSpec(
        name=name, family="ethics", labels=ETHICS, verbalizers=("no", "yes"),
        t5_verbalizers=ETHICS, metric_names=ACC, pair=pair,
        label_aliases=_digits(2) + _names(ETHICS), templates=(("t5", t5), ("causal", causal)),
        local=LocalSource("csv", (("train", (f"ethics/{part}/{part}_train.csv",)),
                                  ("validation", (f"ethics/{part}/{part}_test.csv",)),
                                  ("test", (f"ethics/{part}/{part}_test_hard.csv",))), fields),
        tfds=None, description=f"ETHICS {part} (validation = the release's test, "
                               "test = its hard test)")


TASKS += [
    _ethics("ethics_deontology", "ethics_deontology scenario: {text_a} excuse: {text_b}",
            "Request: {text_a}\nExcuse: {text_b}\nIs this excuse reasonable? Answer:", True),
    _ethics("ethics_justice", "ethics_justice scenario: {text_a}",
            "Statement: {text_a}\nIs this claim fair and reasonable? Answer:", False),
]

# --- Generation: the paper's question answering and summarization families -----------------
# Only their evaluation releases are offline, so each trains on one part and scores another it
# never trained on: SQuAD's dev set split by article (validation = a seeded 20% of the
# articles, `registry.GROUP_CARVE_FRACTION`), NQ-Open trained on EfficientQA's dev and test and
# scored on NQ-Open's dev, SAMSum trained on its validation split and scored on its test split.
# Multi-News is not available offline. The causal style ends an answer at a line break.
def _generation(name: str, family: str, scorer: str, metric_names: tuple[str, ...],
                templates: tuple[tuple[str, str], ...], local: LocalSource, tfds: TfdsSource,
                max_new_tokens: int, pair: bool, description: str) -> TaskSpec:
    return TaskSpec(
        name=name, family=family, labels=(), verbalizers=(), t5_verbalizers=(),
        metric_names=metric_names, templates=templates, pair=pair, label_aliases=(),
        local=local, tfds=tfds, description=description, scorer=scorer,
        max_new_tokens=max_new_tokens, stop="\n")


TASKS += [
    _generation(
        "squad", "qa", "squad", ("f1", "exact_match"),
        (("t5", "question: {text_b} context: {text_a}"),
         ("causal", "Context: {text_a}\nQuestion: {text_b}\nAnswer:")),
        LocalSource("squad", (("train", ("squad/dev-v1.1.json",)), ("validation", CARVED))),
        TfdsSource("squad/v1.1", (("train", "validation[:80%]"),
                                  ("validation", "validation[80%:]")),
                   text_a="context", text_b="question", references="answers/text"),
        max_new_tokens=24, pair=True,
        description="SQuAD v1.1 dev, split by article (train 80% of the articles, "
                    "validation the other 20%)"),
    _generation(
        "nq_open", "qa", "nq_open", ("exact_match",),
        (("t5", "nq question: {text_a}"), ("causal", "Question: {text_a}\nAnswer:")),
        LocalSource("jsonl", (("train", ("nq_open/NQ-open.efficientqa.dev.1.1.jsonl",
                                         "nq_open/NQ-open.efficientqa.test.1.1.jsonl")),
                              ("validation", ("nq_open/NQ-open.dev.jsonl",))),
                    (("text_a", "question"), ("references", "answer"))),
        TfdsSource("natural_questions_open", (("train", "train"), ("validation", "validation")),
                   text_a="question", references="answer"),
        max_new_tokens=16, pair=False,
        description="NQ-Open (train = EfficientQA dev + test, validation = NQ-Open dev)"),
    _generation(
        "samsum", "summarization", "rouge", ("rougeL", "rouge1", "rouge2"),
        (("t5", "summarize: {text_a}"), ("causal", "Dialogue:\n{text_a}\nSummary:")),
        LocalSource("csv", (("train", ("samsum/val.csv",)), ("validation", ("samsum/test.csv",))),
                    (("text_a", "dialogue"), ("references", "summary"))),
        TfdsSource("samsum", (("train", "validation"), ("validation", "test")),
                   text_a="dialogue", references="summary"),
        max_new_tokens=64, pair=False,
        description="SAMSum (train = its validation split, validation = its test split)"),
]

for _spec in TASKS:
    register(_spec)
