"""Hand-written kinds of user request, for chats that train a chat model's drafters.

    python data/chat_requests.py             # writes data/train_requests.json (1,088: 1,024 + 64 held out)
    python train.py chat-data --prompts data/train_requests.json --out data/smollm2-requests

Why: drafters trained on chats whose user turns the model sampled itself draft well on more of
such chats and worse on what people actually type (issue 12's finding: top-1 at +1 is 0.40 on
self-written answers, 0.28 on the bench's). So here are requests of the six kinds the bench
covers (writing, reasoning, maths, code, extraction, knowledge), made from templates and fillers
written for this file. None is a bench prompt (data/chat_prompts.json) nor shares most of its
content words with one: tests/test_chat_requests.py checks both, so the bench stays a held-out test.
Deterministic: the same seed writes the same file.
"""
import argparse
import itertools
import json
import os
import random
import re

HERE = os.path.dirname(os.path.abspath(__file__))

TOPICS = ["a rainy afternoon in the city", "an old bicycle", "the ocean at night", "a cat who loves cardboard boxes",
          "moving to a new town", "falling autumn leaves", "a lost house key", "the last day of summer camp",
          "a sunrise over the mountains", "a busy restaurant kitchen", "a quiet library", "a robot learning to paint",
          "a grandmother's garden", "a train station at midnight", "a dog waiting by the door", "the smell of coffee",
          "a broken umbrella", "stars over the desert", "a child's first swim", "an empty playground"]
FORMS = ["a haiku", "a limerick", "a four-line poem", "a short song verse", "a two-sentence story", "a short fable"]
PEOPLE = ["my landlord", "a neighbour", "my manager", "my child's teacher", "a customer", "an old friend",
          "the hotel reception", "my team"]
PURPOSES = ["thanking them for their help last week", "asking for a day off next Friday",
            "apologizing for my late reply", "inviting them to a barbecue on Saturday",
            "reporting that the heating is broken", "asking for feedback on my report",
            "saying I will be ten minutes late", "congratulating them on their new job"]
THINGS_TO_NAME = ["a coffee shop by the sea", "a podcast about history", "a pet hamster", "a hiking club",
                  "a board game about space travel", "an app that tracks daily habits", "a vegan food truck",
                  "a bookshop for children", "a cleaning company", "a chess club for beginners"]
PRODUCTS = ["a reusable water bottle", "a wireless keyboard", "a travel mug", "noise-cancelling headphones",
            "a standing desk", "a pair of trail running shoes", "a solar phone charger", "a cast iron frying pan",
            "a folding camping chair", "a smart desk lamp"]
CHARACTERS = ["a shy baker", "a retired astronaut", "a girl who can talk to birds", "a detective on holiday",
              "a lonely giant", "two rival chefs", "a boy who finds an old map", "a knight afraid of the dark"]
EVENTS = ["finds a strange letter", "misses the last bus home", "wins a prize by mistake", "wakes up in a forest",
          "meets a talking fox", "discovers a hidden door", "gets lost in a market", "receives a mysterious gift"]
OCCASIONS = ["a friend's wedding", "a colleague's retirement", "the opening of a school year",
             "a sports team's end-of-season dinner", "a grandparent's 80th birthday", "a graduation ceremony"]
SENTENCES = ["hey, the report is late again, fix it", "we can't come to your party, sorry",
             "the meeting got moved, check your calendar", "this product is pretty good I guess",
             "send me the files asap", "thanks for the help, it was useful"]
STYLES = ["more formal", "friendlier", "shorter", "more polite", "more enthusiastic"]

WHYS = ["ice floats on water", "we get goosebumps", "leaves change colour in autumn", "bread goes stale",
        "metal feels colder than wood in the same room", "chopping onions makes us cry", "cats purr",
        "the moon looks bigger near the horizon", "we yawn", "the sea is salty", "popcorn pops",
        "soap removes grease", "a spoon looks bent in a glass of water", "planes leave white trails in the sky",
        "our ears pop on an airplane", "dough rises", "stars twinkle", "ice cream melts faster on a windy day"]
CHOICES = ["living in a big city", "electric cars", "learning a language online", "owning a dog",
           "renting instead of buying a home", "a four-day work week", "school uniforms", "nuclear power",
           "buying second-hand clothes", "taking a gap year"]
PROBLEMS = ["my laptop has become very slow", "my bike chain keeps slipping", "my bread did not rise",
            "my phone battery drains quickly", "my cake sank in the middle", "my car makes a squeaking noise",
            "my wifi keeps disconnecting", "I can't fall asleep at night", "my tomatoes have cracks",
            "my printer prints blank pages"]
OPTIONS = [("take the train", "drive", "a 300 km trip"), ("learn Python", "learn JavaScript", "my first language"),
           ("rent", "buy a flat", "living in a city for two years"), ("run", "swim", "getting fitter"),
           ("buy a laptop", "buy a desktop", "a student"), ("read the book", "watch the film", "a first encounter")]
WHAT_IFS = ["the Earth stopped rotating", "everyone on Earth jumped at the same time", "bees disappeared",
            "the moon were twice as close", "humans could breathe underwater", "the internet went down for a week",
            "it never rained again", "we had no clocks"]
NAMES = ["Anna", "Ben", "Chloe", "David", "Emma", "Felix", "Grace", "Hugo", "Iris", "Jonas", "Kira", "Leo"]
NONSENSE = ["dax", "wug", "blick", "toma", "fep", "zorb", "kiki", "plonk"]

CONCEPTS = ["a fraction", "the median of a list", "a square root", "a percentage", "a ratio", "a factorial",
            "the Pythagorean theorem", "an average", "a negative number", "a probability"]
ITEMS = ["notebooks", "apples", "tickets", "pens", "cupcakes", "plants", "bus passes", "mugs"]

LANGS = ["Python", "JavaScript", "Java", "C", "Go", "Rust"]
TASKS = ["returns the largest number in a list", "counts the vowels in a string",
         "converts Celsius to Fahrenheit", "checks whether a number is even", "removes duplicates from a list",
         "computes the factorial of n", "sums the digits of a number", "returns the n-th Fibonacci number",
         "merges two sorted lists", "counts the words in a sentence", "finds the smallest element of an array",
         "capitalizes the first letter of each word"]
HOW_TOS = ["sort a dictionary by its values", "read a file line by line", "join a list of strings",
           "get the current date", "split a string on commas", "check if a key is in a dictionary",
           "remove whitespace from a string", "generate a random number", "copy a list", "handle an exception"]
SQL = ["counts the customers in each country, from a table named customers",
       "finds the average salary in a table named employees",
       "lists the products cheaper than 10 dollars, from a table named products",
       "deletes the rows of a table named logs older than 30 days",
       "joins a users table to a posts table on the user id", "finds duplicate email addresses in a users table"]
CODE_IDEAS = ["recursion", "a class", "a dictionary", "an API", "a while loop", "a variable", "a function argument",
              "an array index", "a boolean", "version control"]
SHELL = ["finds every file larger than 100 MB", "shows how much disk space a folder uses",
         "renames every .jpeg file to .jpg", "lists the ten largest files in my home folder",
         "prints the last 20 lines of a log file", "searches all .py files for the word TODO"]

TEXTS = ["Last Friday, Olivia Chen, 41, opened a bakery on Elm Street in Denver. Her partner, Raj Patel, runs "
         "the finances.", "The conference moves from Madrid to Oslo next year and will take place on 12 June.",
         "Our team of six finished the project two weeks early, saving about 3,000 euros.",
         "Dr. Amara Okafor from Lagos gave a talk on clean water at the University of Toronto on 4 May.",
         "The train to Glasgow leaves at 7:15 from platform 4 and arrives at 11:40.",
         "Sales rose by 12 percent in March, while costs stayed the same as in February.",
         "Peter, 52, and his daughter Lina, 19, hiked from Zermatt to Saas-Fee in two days.",
         "The museum is closed on Mondays; tickets cost 15 dollars for adults and 8 for children.",
         "After three years in Seoul, Maya moved to Melbourne to study marine biology.",
         "The storm knocked out power in Bristol and Cardiff for nearly nine hours on Sunday.",
         "Nadia Haddad signed a two-year contract with a Lyon football club on 30 August for 2 million euros.",
         "The recipe needs 250 grams of rice, 1 litre of stock, an onion and 50 grams of parmesan.",
         "On 9 October, Carlos Ruiz and Ana Silva opened a small cinema in Porto with 80 seats.",
         "Flight LH 402 from Frankfurt to New York was delayed by three hours on Tuesday because of fog."]
FIELDS = ["the people's names", "every place", "all the numbers", "the dates and times", "the main event"]
REVIEWS = ["The delivery was late and the box was damaged.", "Absolutely love this blender, it is quiet and fast.",
           "The hotel was fine, nothing special.", "Great food but the service was very slow.",
           "Worst customer support I have ever dealt with.", "The book started slowly but the ending was brilliant."]
LISTS = ["buy milk, call the dentist, water the plants and pay the gas bill",
         "tent, sleeping bag, torch, matches and a first aid kit",
         "passport, charger, sunglasses, two shirts and a swimsuit",
         "chop the onions, fry them in oil, add the tomatoes and simmer for ten minutes",
         "book the venue, send invitations, order the cake and hire a photographer",
         "back up the laptop, update the system, restart and check the printer"]

SUBJECTS = ["gravity", "an atom", "a black hole", "inflation", "DNA", "the water cycle", "a volcano", "democracy",
            "an earthquake", "electricity", "the immune system", "plate tectonics", "a rainbow", "the stock market",
            "climate change", "evolution", "a vaccine", "the internet", "magnetism", "a solar eclipse"]
WHOS = ["wrote Romeo and Juliet", "invented the telephone", "was the first person on the Moon",
        "discovered penicillin", "composed the Moonlight Sonata", "painted The Starry Night",
        "developed the theory of relativity", "built the first successful airplane", "wrote Pride and Prejudice",
        "discovered radium"]
PAIRS = [("weather", "climate"), ("a lake", "a sea"), ("an alligator", "a crocodile"), ("memory", "storage"),
         ("a meteor", "a meteorite"), ("speed", "velocity"), ("a frog", "a toad"), ("a democracy", "a monarchy"),
         ("an ocean", "a sea"), ("a moth", "a butterfly")]
PLACES = ["Japan", "Brazil", "Egypt", "Canada", "Australia", "Kenya", "Norway", "India", "Mexico", "Italy",
          "Peru", "Vietnam", "Morocco", "Iceland"]
HISTORIES = ["the printing press", "the bicycle", "paper money", "the Olympic Games", "chess", "the compass",
             "coffee", "the postage stamp", "jeans", "glasses"]
DEVICES = ["a fridge", "a microwave oven", "a solar panel", "a touch screen", "GPS", "an electric motor",
           "a heat pump", "a camera", "a bicycle gear", "a thermostat"]
HABITATS = ["the Arctic", "a rainforest", "a desert", "the deep sea", "a coral reef", "the savanna",
            "a mountain range", "a city park"]
PLACE_FACTS = ["What is the capital of {}?", "Tell me three interesting facts about {}.",
               "What language do people speak in {}?", "What is {} famous for?"]


def templates(rng):
    """Yield (kind, text) for every template x filler combination (the pool to sample from)."""
    for form, topic in itertools.product(FORMS, TOPICS):
        yield "writing", f"Write {form} about {topic}."
    for person, purpose in itertools.product(PEOPLE, PURPOSES):
        yield "writing", f"Write a short message to {person}, {purpose}."
    for n, thing in itertools.product(["three", "five"], THINGS_TO_NAME):
        yield "writing", f"Suggest {n} names for {thing}."
    for thing in PRODUCTS:
        yield "writing", f"Write a short advert for {thing}."
        yield "writing", f"Describe {thing} to a customer in three sentences."
    for who, event in itertools.product(CHARACTERS, EVENTS):
        yield "writing", f"Begin a story about {who} who {event}."
    for occasion in OCCASIONS:
        yield "writing", f"Write a short toast for {occasion}."
    for s, style in itertools.product(SENTENCES, STYLES):
        yield "writing", f"Rewrite this to sound {style}: \"{s}\""

    for why in WHYS:
        yield "reasoning", f"Why does it happen that {why}?"
        yield "reasoning", f"Explain to a ten-year-old why {why}."
    for choice in CHOICES:
        yield "reasoning", f"What are the advantages and disadvantages of {choice}?"
        yield "reasoning", f"Give two arguments for and two against {choice}."
    for problem in PROBLEMS:
        yield "reasoning", f"{problem[0].upper() + problem[1:]}. What should I check first?"
    for a, b, goal in OPTIONS:
        yield "reasoning", f"Should I {a} or {b} for {goal}? Give reasons."
    for w in WHAT_IFS:
        yield "reasoning", f"What would happen if {w}?"
    for x, y, z in itertools.permutations(NAMES[:6], 3):
        yield "reasoning", f"{x} is older than {y}, and {y} is older than {z}. Who is the youngest?"
    for a, b, c in itertools.permutations(NONSENSE, 3):
        yield "reasoning", f"Every {a} is a {b}, and no {b} is a {c}. Can a {a} be a {c}? Think it through."

    for _ in range(60):
        a, b = rng.randint(11, 99), rng.randint(11, 99)
        op = rng.choice(["times", "plus", "minus"])
        yield "maths", f"Calculate {a} {op} {b} step by step."
    for _ in range(30):
        p, n = rng.choice([10, 15, 20, 30, 40, 60, 75]), rng.randrange(20, 400, 10)
        yield "maths", f"How much is {p} percent of {n}?"
        yield "maths", f"A price of {n} euros goes up by {p}%. What is the new price?"
    for _ in range(40):
        a, x, b = rng.randint(2, 9), rng.randint(1, 12), rng.randint(1, 30)
        yield "maths", f"Find y if {a}y - {b} = {a * x - b}."
    for _ in range(30):
        w, h = rng.randint(2, 20), rng.randint(2, 20)
        yield "maths", f"A garden is {w} metres wide and {h} metres long. What are its area and perimeter?"
        yield "maths", f"What is the volume of a box that is {w} cm by {h} cm by {rng.randint(2, 9)} cm?"
    for _ in range(40):
        name, item = rng.choice(NAMES), rng.choice(ITEMS)
        yield "maths", f"{name} buys {rng.randint(3, 12)} {item} at {rng.randint(2, 9)} dollars each. " \
                       f"How much does that cost in total?"
        yield "maths", f"A train covers {rng.randrange(120, 600, 30)} km in {rng.randint(2, 5)} hours. " \
                       f"What is its average speed?"
    for concept in CONCEPTS:
        yield "maths", f"Explain {concept} with a simple example."

    for lang, task in itertools.product(LANGS, TASKS):
        yield "code", f"Write a {lang} function that {task}."
    for lang, how in itertools.product(["Python", "JavaScript", "Java", "C#", "Ruby"], HOW_TOS):
        yield "code", f"In {lang}, how can I {how}?"
    for q in SQL:
        yield "code", f"Write an SQL query that {q}."
    for idea, lang in itertools.product(CODE_IDEAS, ["Python", "Go", "C++"]):
        yield "code", f"What is {idea} in programming? Show it in {lang}."
    for s in SHELL:
        yield "code", f"Give me a Linux command that {s}."
    for n in range(2, 8):
        yield "code", f"What does this Python code print?\nfor i in range({n}):\n    print(i * i)"

    for text, field in itertools.product(TEXTS, FIELDS):
        yield "extraction", f"From the text below, pull out {field}.\n\n{text}"
    for text in TEXTS:
        yield "extraction", f"Sum this up in ten words or fewer: {text}"
        yield "extraction", f"Write one question that this text answers: {text}"
    for review in REVIEWS:
        yield "extraction", f"Is this review positive, negative or neutral? \"{review}\""
    for items in LISTS:
        yield "extraction", f"Make a numbered checklist from this: {items}."

    for s in SUBJECTS:
        yield "knowledge", f"What is {s}?"
        yield "knowledge", f"Explain {s} as if I were twelve."
    for who in WHOS:
        yield "knowledge", f"Who {who}?"
    for a, b in PAIRS:
        yield "knowledge", f"How is {a} different from {b}?"
    for place, q in itertools.product(PLACES, PLACE_FACTS):
        yield "knowledge", q.format(place)
    for h in HISTORIES:
        yield "knowledge", f"Give me a short history of {h}."
    for d in DEVICES:
        yield "knowledge", f"How does {d} work?"
    for h in HABITATS:
        yield "knowledge", f"Name three animals that live in {h} and say how they survive there."


STOP = set("a an the and or of to in on for with is are be by at as it this that what why how who which from "
           "me my i you your do does can there their its".split())


def content_words(text):
    """Lower-cased words of a text without the function words: what a request is about."""
    return set(re.findall(r"[a-z0-9']+", text.lower())) - STOP


def too_close(text, others, limit=0.5):
    """The first of others whose content words overlap text's by more than limit (Jaccard), or None."""
    w = content_words(text)
    for o in others:
        u = content_words(o)
        if w == u or len(w & u) / max(1, len(w | u)) > limit:
            return o
    return None


def pools(rng, bench):
    """{kind: distinct requests} of every template and filler, without those too close to a bench prompt."""
    out = {}
    for kind, text in templates(rng):
        if text not in out.setdefault(kind, []) and too_close(text, bench) is None:
            out[kind].append(text)
    return out


def requests(n, seed=1337, bench=None):
    """n distinct requests, none too close to a bench prompt, the kinds as even as their pools allow
    (drawn in turn from each kind's shuffled pool; the puzzles' permutations alone would make hundreds)."""
    rng = random.Random(seed)
    if bench is None:
        with open(os.path.join(HERE, "chat_prompts.json")) as f:
            bench = [p["text"] for p in json.load(f)["prompts"]]
    kinds = pools(rng, bench)
    if n > sum(map(len, kinds.values())):
        raise ValueError(f"asked for {n} requests, the templates make {sum(map(len, kinds.values()))} distinct ones")
    for pool in kinds.values():
        rng.shuffle(pool)
    out = []
    while len(out) < n:
        for kind, pool in kinds.items():
            if pool and len(out) < n:
                out.append({"kind": kind, "text": pool.pop()})
    rng.shuffle(out)  # any slice (chat-data holds out the last 1/17) has every kind
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1088)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--out", default=os.path.join(HERE, "train_requests.json"))
    a = p.parse_args(argv)
    about = (f"User requests for drafter training data (train.py chat-data --prompts), written by "
             f"data/chat_requests.py --n {a.n} --seed {a.seed} from its templates: never the bench's prompts "
             f"(data/chat_prompts.json).")
    try:
        made = requests(a.n, a.seed)
    except ValueError as e:
        p.error(f"--n {a.n}: {e}; add templates or fillers to this file for more")
    with open(a.out + ".tmp", "w") as f:
        json.dump({"about": about, "prompts": made}, f, indent=1)
        f.write("\n")
    os.replace(a.out + ".tmp", a.out)
    print(f"wrote {a.n} requests to {os.path.relpath(a.out)}")


if __name__ == "__main__":
    main()
