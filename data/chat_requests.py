"""Hand-written kinds of user request, for chats that train a chat model's drafters.

    python data/chat_requests.py             # writes data/train_requests.json (1,088: 1,024 + 64 held out)
    python data/chat_requests.py --set 2     # writes data/train_requests_2.json (1,088 more, none of the first's)
    python train.py chat-data --prompts data/train_requests.json --out data/smollm2-requests

Why: drafters trained on chats whose user turns the model sampled itself draft well on more of
such chats and worse on what people actually type (issue 12's finding: top-1 at +1 is 0.40 on
self-written answers, 0.28 on the bench's). So here are requests of the six kinds the bench
covers (writing, reasoning, maths, code, extraction, knowledge), made from templates and fillers
written for this file. None is a bench prompt (data/chat_prompts.json) nor shares most of its
content words with one: tests/test_chat_requests.py checks both, so the bench stays a held-out test.
Set 2, for more training data, comes from other templates (more_templates) and what set 1 left of the first
pool, and holds none of set 1's requests.
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


# Set 2 (--set 2): other kinds of request than the templates above make, with their own fillers.
COMPLAINTS = ["a parcel that arrived two weeks late", "a hotel room that was never cleaned",
              "being charged twice for one order", "a new washing machine that leaks",
              "a flight cancelled without notice", "a gym that kept charging me after I cancelled",
              "cold food from a delivery app", "a phone repair that did not fix the screen"]
JOBS = ["a nurse", "a graphic designer", "a data analyst", "a primary school teacher", "a software tester", "a barista",
        "a librarian", "an electrician", "a translator", "a park ranger"]
CAUSES = ["a campaign to save water", "a school's recycling week", "a bike-to-work day", "a charity run for the local "
          "hospital", "a second-hand bookshop", "a dentist's practice", "a dog-walking service", "a night market"]
NEWS = ["our café's new 7 am opening time", "the library's new late opening hours", "a free coding workshop next "
        "Saturday", "our shop's move to a bigger place on King Street", "the winner of our photo contest",
        "a new podcast episode about sleep", "the school fair's new date after the rain", "our app's new dark mode"]
TALES = ["Cinderella", "Little Red Riding Hood", "The Three Little Pigs", "Hansel and Gretel", "The Ugly Duckling",
         "Jack and the Beanstalk", "Goldilocks and the Three Bears", "The Tortoise and the Hare"]
SPEAKERS = ["a waiter and a customer", "a teenager and a grandparent", "two astronauts", "a shopkeeper and a tourist",
            "a coach and a nervous player", "two neighbours"]
CHATS = ["the weather", "a missing sandwich", "what to cook for dinner", "a surprise party", "a very noisy parrot"]
DISHES = ["pancakes", "a simple tomato soup", "guacamole", "fried rice", "banana bread", "a Greek salad",
          "scrambled eggs", "lemonade"]
ANIMALS = ["a sleepy owl", "a brave little hedgehog", "a penguin who hates the cold", "a turtle who wants to fly",
           "a lost baby elephant", "a bear who can't sleep", "a mouse who lives in a piano", "a curious octopus"]
JOKES = ["cats", "computers", "maths teachers", "vegetables", "the weather", "dentists", "pirates", "Mondays",
         "coffee", "homework"]

CITIES = ["Lisbon", "Kyoto", "Edinburgh", "Prague", "Cape Town", "Montreal"]
VERSUS = [("a tablet", "a laptop"), ("a cat", "a dog"), ("a gym membership", "home workouts"),
          ("an e-reader", "paper books"), ("a city bike", "an electric scooter"),
          ("a small car", "a yearly train pass")]
WHO_FOR = ["a retired teacher", "a student with little money", "a family with two small children",
           "someone who works night shifts"]
RIDDLES = ["What has keys but can't open locks?", "What gets wetter the more it dries?",
           "I have cities but no houses, forests but no trees, and water but no fish. What am I?",
           "What can you catch but not throw?", "The more you take, the more you leave behind. What are they?",
           "What has a neck but no head?", "What goes up but never comes down?", "What has one eye but cannot see?"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
CHANGES = ["a town's main factory closes", "a city makes its buses free", "schools start an hour later",
           "the price of petrol doubles", "a supermarket opens next to a small bakery", "a country bans plastic bags"]
DILEMMAS = ["to keep the extra change a cashier gave me by mistake", "to tell a friend that their partner is cheating",
            "to read my teenager's diary", "to call in sick to go to a concert", "to eat meat",
            "to lie about my age to get a discount", "to report a colleague who takes long breaks",
            "to give money to people begging in the street"]
FAULTS = ["the dishwasher leaves my glasses cloudy", "my sourdough starter smells of nail polish",
          "the washing machine won't drain", "my houseplant's soil has white mould on it",
          "my car won't start on cold mornings", "my headphones only play in one ear",
          "the kitchen sink drains very slowly", "my smoke alarm beeps once a minute"]

UNITS = [("kilometres", "metres", 1000), ("hours", "minutes", 60), ("kilograms", "grams", 1000),
         ("litres", "millilitres", 1000), ("days", "hours", 24), ("feet", "inches", 12), ("metres", "centimetres", 100)]
PLACES_VALUE = ["the nearest ten", "the nearest hundred", "one decimal place", "two decimal places",
                "the nearest whole number"]

ERRORS = ["TypeError: 'NoneType' object is not subscriptable", "IndexError: list index out of range",
          "KeyError: 'name'", "SyntaxError: unexpected EOF while parsing", "ZeroDivisionError: division by zero",
          "ModuleNotFoundError: No module named 'requests'", "Uncaught ReferenceError: total is not defined",
          "java.lang.NullPointerException", "Segmentation fault (core dumped)",
          "fatal: not a git repository (or any of the parent directories): .git",
          "UnboundLocalError: local variable 'count' referenced before assignment",
          "TypeError: can only concatenate str (not \"int\") to str"]
BUGGY = ["def add_item(item, items=[]):\n    items.append(item)\n    return items",
         "for i in range(len(names)):\n    print(names[i + 1])",
         "total = 0\nfor n in numbers:\n    total = n\nprint(total)",
         "const nums = [10, 1, 5];\nnums.sort();\nconsole.log(nums);", "i = 0\nwhile i < 10:\n    print(i)",
         "def is_even(n):\n    if n % 2 == 0:\n        return True", "if (x = 5) {\n    printf(\"five\\n\");\n}",
         "price = input('Price: ')\nprint(price * 1.2)"]
LOOPS = ["squares = []\nfor x in range(10):\n    squares.append(x * x)",
         "evens = []\nfor n in numbers:\n    if n % 2 == 0:\n        evens.append(n)",
         "upper = []\nfor word in words:\n    upper.append(word.upper())",
         "pairs = []\nfor a in range(3):\n    for b in range(3):\n        pairs.append((a, b))",
         "clean = []\nfor line in lines:\n    if line.strip():\n        clean.append(line.strip())",
         "lengths = []\nfor name in names:\n    lengths.append(len(name))"]
FUNCS = ["def has_duplicates(xs):\n    for i in range(len(xs)):\n        for j in range(i + 1, len(xs)):\n"
         "            if xs[i] == xs[j]:\n                return True\n    return False",
         "def total(xs):\n    s = 0\n    for x in xs:\n        s += x\n    return s",
         "def halvings(n):\n    steps = 0\n    while n > 1:\n        n //= 2\n        steps += 1\n    return steps",
         "def pairs(xs):\n    return [(a, b) for a in xs for b in xs]",
         "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)",
         "def last(xs):\n    return xs[-1]"]
CLASSES = [("Book", "title, author and year"), ("BankAccount", "owner and balance"), ("Rectangle", "width and height"),
           ("Recipe", "name, servings and ingredients"), ("Student", "name, age and grades"), ("Point", "x and y"),
           ("Song", "title, artist and length in seconds"), ("Task", "description, due date and done")]
WEB = ["a centred login form with email and password", "a navigation bar with three links",
       "a card with an image, a title and a button", "a two-column layout that stacks on phones",
       "a button that changes colour on hover", "a pricing table with three plans",
       "a footer that stays at the bottom of the page", "a grid of photos that fits any screen"]
CSS = ["centre a div horizontally and vertically", "underline a link only on hover", "add a shadow to a box",
       "make an image round", "hide an element on small screens", "give every other table row a grey background"]
TESTED = ["checks whether a year is a leap year", "splits a full name into first and last name",
          "returns a price after a discount", "checks that a postcode has five digits",
          "turns minutes into hours and minutes", "returns the initials of a name"]
PATTERNS = ["a UK postcode", "an email address", "a date like 2024-05-17", "a 24-hour time like 09:45",
            "a hex colour code like #1a2b3c", "a US phone number like (555) 123-4567",
            "words that start with a capital letter", "whole numbers with an optional minus sign",
            "a URL that starts with https", "the same word twice in a row"]
GIT = ["undo my last commit but keep the changes", "create a new branch and switch to it",
       "see what changed in a file since the last commit", "delete a branch on the remote",
       "change the message of my last commit", "put my changes aside and get them back later",
       "see who last changed each line of a file", "throw away my local changes to one file"]
GIT_CMDS = ["rebase", "cherry-pick", "reset --hard", "fetch", "merge --squash", "bisect"]

HEADLINES = ["The central bank raised interest rates for the third time this year.",
             "Scientists found water ice in a crater near the Moon's south pole.",
             "The home team won the final with a goal in the last minute.",
             "Parliament passed a new law on holiday lets.",
             "The museum's new exhibition shows 200 years of fashion.",
             "A start-up raised 40 million dollars to build cheaper batteries.",
             "The marathon was moved to October because of the heat.", "A new study links poor sleep to weaker memory.",
             "The band's farewell tour sold out in ten minutes.",
             "The mayor promised more cycle lanes before the election.",
             "Shares in the airline fell 8 percent after the strike.",
             "Astronomers spotted a comet that will be visible in May."]
NOTES = ["Tom ordered two coffees at 3 euros each, Sara had a tea for 2.50 and Ali took a cake for 4 euros.",
         "Our Leeds branch has 12 staff and opened in 2015, York has 8 staff and opened in 2019, and Hull has 5 staff "
         "and opened last year.", "The blue jacket comes in sizes S to XL and costs 60 dollars; the red one only comes "
         "in M and L, for 45 dollars.", "Monday: 14 degrees and rain. Tuesday: 17 and cloudy. Wednesday: 21 and sunny.",
         "Lena scored 78 in maths and 91 in English; Marco got 85 in maths and 70 in English; Yuki got 92 in both.",
         "The flat has two bedrooms and a balcony, is 68 square metres, costs 1,150 euros a month and is free from "
         "1 March.", "Apollo 11 launched in 1969 with three crew; Apollo 13 launched in 1970, also with three, and "
         "came back without landing.", "Our bakery sold 120 croissants on Friday, 180 on Saturday and 95 on Sunday."]
MEETINGS = ["Notes from Tuesday: Priya will send the budget by Friday. Mark needs to book the room for the workshop. "
            "We agreed to drop the newsletter. Jen to call the printer about the delay.",
            "Quick sync: the website launch moves to the 14th. Dan fixes the login bug first. Someone should update "
            "the FAQ; Aisha volunteered. Next meeting in two weeks.",
            "Parents' committee: raffle tickets go on sale Monday. Tom collects the prizes, Rosa makes posters, and "
            "the treasurer will open a new bank account.",
            "Team retro: deployments were too slow. Kai will look into caching the build. Everyone agreed to write "
            "shorter pull requests. Mia organises the next social.",
            "Kitchen call: the builder starts on 3 June. We must choose tiles by next week. Sam will ask the "
            "neighbours about the noise. The budget stays at 9,000."]
EMAILS = ["Hi Jo, just a reminder that the invoice for 1,240 euros is due on 15 April. Thanks, Pat",
          "Dear customer, your refund of 35.99 dollars was sent on 2 February and should arrive within five working "
          "days.", "Hello all, the office party is on Friday 8 December at 6 pm. Please pay the 20 pounds for the "
          "dinner by Monday.", "Hi, your dentist appointment has moved from 10 to 12 May, same time (9:30). Reply to "
          "confirm.", "Team, our budget for the trade fair is 4,500 dollars and the stand must be booked before "
          "30 June.", "Dear Mr Novak, your rent will rise from 900 to 950 euros a month from 1 September.",
          "Hey! Tickets for the concert on 21 July are 48 each, so 96 for the two of us. Can you send me your half?",
          "Reminder: the library book 'The Hobbit' was due back on 3 March; the late fee is now 2.40."]
MISTAKES = ["me and him goes to the gym every mondays", "their going to there house tomorow",
            "she don't like coffee no more", "i has been waiting since two hours",
            "the childs was playing in the gardens yesterday", "if i would have knew, i would of came",
            "less people came to the meeting then we expected", "he speaked very good at the interview",
            "we was suppose to meet at 5", "its a really nice weathers today"]
PHRASES = ["Where is the train station?", "I would like a coffee with milk, please.",
           "My sister lives in a small village.", "The shop closes at eight tonight.",
           "Can you help me carry this box?", "We are going to the beach tomorrow.",
           "I lost my phone on the bus.", "How much does this jacket cost?", "It is too cold to go outside.",
           "Thank you for dinner, it was delicious.", "My brother is taller than me.", "The children are asleep."]
RECIPES = ["Melt 50 g of butter in a pan, stir in 2 tablespoons of flour, then slowly add 500 ml of milk and a pinch "
           "of nutmeg. Cook for five minutes until thick.",
           "Mash three ripe bananas, mix in 2 eggs, 100 g of sugar and 200 g of flour with a teaspoon of baking soda, "
           "and bake for 50 minutes at 180 degrees.",
           "Fry a chopped onion and two cloves of garlic, add a tin of chickpeas, a tin of tomatoes and a spoon of "
           "curry paste, then simmer for 20 minutes and serve with rice.",
           "Whisk 3 eggs with a splash of milk, pour them into a hot buttered pan, scatter on grated cheese and "
           "chives, and fold after two minutes.",
           "Blend a cup of frozen berries, a banana, 200 ml of yoghurt and a spoon of honey until smooth."]

MADE = ["glass", "cheese", "paper", "chocolate", "steel", "silk", "a pencil", "olive oil", "yoghurt", "a brick",
        "green tea", "soap"]
TERMS = {"biology": ["osmosis", "a gene", "mitosis", "an enzyme", "a habitat", "homeostasis"],
         "physics": ["friction", "momentum", "a wavelength", "inertia", "kinetic energy", "a semiconductor"],
         "economics": ["supply and demand", "a recession", "interest", "opportunity cost", "a monopoly", "GDP"],
         "computing": ["a cache", "encryption", "an operating system", "a compiler", "bandwidth", "open source"],
         "geography": ["a delta", "a glacier", "a fjord", "latitude", "a monsoon", "an estuary"]}
LANDMARKS = ["the Eiffel Tower", "the Great Wall of China", "Machu Picchu", "the Colosseum", "the Taj Mahal",
             "Stonehenge", "the Golden Gate Bridge", "Petra", "the Sydney Opera House", "Angkor Wat"]
NUTRIENTS = ["vitamin C", "iron", "protein", "fibre", "calcium", "omega-3 fats", "vitamin D", "potassium"]
HEALTH = ["How much water should an adult drink a day?", "Why is sleep important for the brain?",
          "What happens to our muscles when we exercise?", "Is it bad to skip breakfast?",
          "How can I tell a cold from the flu?", "How does sugar damage teeth?"]
IDIOMS = ["break the ice", "bite the bullet", "the ball is in your court", "once in a blue moon", "spill the beans",
          "let the cat out of the bag", "under the weather", "cost an arm and a leg", "hit the nail on the head",
          "a piece of cake", "burn the midnight oil", "barking up the wrong tree"]
HOLIDAYS = ["Halloween", "Thanksgiving", "Diwali", "Hanukkah", "the Chinese New Year", "Easter", "Valentine's Day",
            "the Day of the Dead", "April Fools' Day", "Bastille Day"]
TWINS = [("a hurricane", "a tornado"), ("a herbivore", "an omnivore"), ("a comet", "an asteroid"),
         ("a simile", "a metaphor"), ("a debit card", "a credit card"), ("a rabbit", "a hare"),
         ("an atom", "a molecule"),
         ("a violin", "a viola"), ("a mountain", "a hill"), ("a dialect", "a language"), ("a hypothesis", "a theory"),
         ("a stock", "a bond"), ("baking soda", "baking powder"), ("a mushroom", "a plant")]


def more_templates(rng):
    """Yield (kind, text) for set 2's templates: other requests than templates() makes, most of them code,
    extraction and knowledge (the kinds whose first pool set 1 used up)."""
    for tone, c in itertools.product(["polite but firm", "short"], COMPLAINTS):
        yield "writing", f"Write a {tone} complaint email about {c}."
    for job, years in itertools.product(JOBS, ["two", "five"]):
        yield "writing", f"Write the opening paragraph of a cover letter for a job as {job}. I have {years} years " \
                         f"of experience."
    for c in CAUSES:
        yield "writing", f"Come up with a catchy slogan for {c}."
        yield "writing", f"Give me three slogans for {c}, each under six words."
    for news in NEWS:
        yield "writing", f"Write a tweet announcing {news}."
        yield "writing", f"Write a two-line Instagram caption about {news}."
    for tale, n in itertools.product(TALES, ["three", "five"]):
        yield "writing", f"Summarise the plot of {tale} in {n} sentences."
    for who, about in itertools.product(SPEAKERS, CHATS):
        yield "writing", f"Write a short dialogue between {who} about {about}."
    for dish in DISHES:
        yield "writing", f"Explain how to make {dish} in one paragraph of prose, not a list."
    for animal, age in itertools.product(ANIMALS, ["four", "seven"]):
        yield "writing", f"Tell a bedtime story for a {age}-year-old about {animal}."
    for theme in JOKES:
        yield "writing", f"Tell me a joke about {theme}."
        yield "writing", f"Write a pun about {theme}."

    for city, days in itertools.product(CITIES, [2, 4]):
        yield "reasoning", f"Plan a {days}-day trip to {city} on a budget of {days * 250} euros."
    for _ in range(8):
        pay = rng.randrange(1600, 4000, 100)
        yield "reasoning", f"I earn {pay} euros a month after tax and my rent is {pay * 2 // 500 * 100}. " \
                           f"How should I split the rest?"
    for (a, b), who in itertools.product(VERSUS, WHO_FOR):
        yield "reasoning", f"Which is better for {who}: {a} or {b}? Weigh it up."
    for r in RIDDLES:
        yield "reasoning", f"Solve this riddle and explain the answer: {r}"
    for day, n in itertools.product(DAYS, [10, 17, 25, 100]):
        yield "reasoning", f"If today is {day}, what day of the week will it be in {n} days?"
    for day in DAYS:
        yield "reasoning", f"If the day before yesterday was {day}, what day is tomorrow?"
    for c in CHANGES:
        yield "reasoning", f"Suppose {c}. Who gains, who loses, and why?"
    for d in DILEMMAS:
        yield "reasoning", f"Is it wrong {d}? Look at it from more than one side."
    for f in FAULTS:
        yield "reasoning", f"Troubleshoot this with me: {f}. List the likely causes, most likely first."

    for _ in range(30):
        big, small, k = rng.choice(UNITS)
        x = rng.choice([1.5, 2, 2.5, 3, 4, 6, 7.5, 12])
        yield "maths", rng.choice([f"How many {small} are there in {x} {big}?",
                                   f"Convert {int(x * k)} {small} to {big}."])
    for _ in range(30):
        a, c = rng.randint(1, 5), rng.randint(1, 5)
        b, d = rng.randint(a + 1, 9), rng.randint(c + 1, 9)
        yield "maths", f"What is {a}/{b} {rng.choice(['+', '-', 'times'])} {c}/{d}? Give the answer as a simplified " \
                       f"fraction."
    for _ in range(20):
        p, r, t = rng.randrange(500, 5000, 100), rng.choice([2, 3, 4, 5]), rng.randint(2, 6)
        yield "maths", f"I put {p} dollars in a savings account paying {r}% simple interest. How much interest " \
                       f"do I earn in {t} years?"
    for _ in range(20):
        xs = [rng.randint(5, 95) for _ in range(rng.randint(4, 7))]
        yield "maths", f"What is the average of {', '.join(map(str, xs[:-1]))} and {xs[-1]}?"
    for _ in range(15):
        a, b, d = rng.randint(2, 6), rng.randint(3, 12), rng.randint(4, 20)
        yield "maths", f"{a} workers build a wall in {d} days. How long would {b} workers take at the same rate?"
        v, w = rng.randrange(40, 120, 10), rng.randrange(40, 120, 10)
        yield "maths", f"Two trains start {(v + w) * rng.randint(2, 4)} km apart and travel towards each other at " \
                       f"{v} km/h and {w} km/h. When do they meet?"
    for a, b in itertools.combinations([2, 3, 4, 6, 12], 2):
        yield "maths", f"One tap fills a tank in {a} hours and another in {b} hours. How long do both take together?"
    for _ in range(20):
        a, d = rng.randint(1, 20), rng.randint(2, 9)
        seq = [a + d * i for i in range(5)] if rng.random() < 0.6 else [a * d ** i for i in range(4)]
        yield "maths", f"What are the next two numbers in {', '.join(map(str, seq))}, ...? Explain the rule."
    for k in range(2, 13):
        yield "maths", f"What is the probability of rolling a total of {k} with two dice?"
    for n in range(2, 6):
        for k in range(1, n + 1):
            yield "maths", f"If I flip a fair coin {n} times, what is the probability of getting exactly {k} heads?"
    for _ in range(20):
        yield "maths", f"Round {rng.randint(100, 9999)}.{rng.randint(100, 999)} to {rng.choice(PLACES_VALUE)}."
    for _ in range(15):
        a, x, b = rng.randint(2, 9), rng.randint(1, 12), rng.randint(1, 9)
        yield "maths", f"Solve for x: {a}(x + {b}) = {a * (x + b)}."
        yield "maths", f"Solve x/{a} - {b} = {x}, and check your answer."

    for e in ERRORS:
        yield "code", f"What does this error mean, and how do I fix it?\n{e}"
        yield "code", f"I get \"{e}\" when I run my program. What am I doing wrong?"
    for s in BUGGY:
        yield "code", f"This code has a bug. Find it and fix it:\n\n{s}"
        yield "code", f"Why doesn't this code do what I expect?\n\n{s}"
    for s in LOOPS:
        yield "code", f"Turn this loop into a list comprehension:\n\n{s}"
        yield "code", f"Rewrite this Python in one line, and say whether it is clearer:\n\n{s}"
    for s in FUNCS:
        yield "code", f"What is the time complexity of this function in big-O notation, and why?\n\n{s}"
        yield "code", f"What does this function compute, and how does its running time grow with the input?\n\n{s}"
    for (name, fields), lang in itertools.product(CLASSES, ["Python", "Java", "TypeScript", "C#", "Kotlin"]):
        yield "code", f"Write a {lang} class {name} with the fields {fields}."
    for w in WEB:
        yield "code", f"Write the HTML and CSS for {w}."
        yield "code", f"Using only HTML and CSS, build {w}. Keep it short."
    for c in CSS:
        yield "code", f"How do I {c} with CSS?"
    for t, framework in itertools.product(TESTED, ["pytest", "Jest"]):
        yield "code", f"Write {framework} unit tests for a function that {t}."
    for p in PATTERNS:
        yield "code", f"Write a regular expression that matches {p}, and explain each part."
        for lang in ["Python", "JavaScript"]:
            yield "code", f"Give me a {lang} regex for {p}."
    for g in GIT:
        yield "code", f"Which git command do I use to {g}?"
    for c in GIT_CMDS:
        yield "code", f"Explain what git {c} does, with an example."

    for h in HEADLINES:
        yield "extraction", f"Which topic is this sentence about: sport, politics, science, business or culture?\n{h}"
        yield "extraction", f"Give this headline a category and three keywords: \"{h}\""
    for note in NOTES:
        yield "extraction", f"Turn this into a table:\n\n{note}"
        yield "extraction", f"Convert this into JSON:\n\n{note}"
        yield "extraction", f"Put the facts in this text into CSV with a header row: {note}"
        yield "extraction", f"What is the largest number in this text, and what does it count? {note}"
    for m in MEETINGS:
        yield "extraction", f"List the action items in this meeting note, with who owns each one:\n\n{m}"
        yield "extraction", f"What was decided in this meeting? {m}"
        yield "extraction", f"Make a to-do list with deadlines from these notes: {m}"
    for e in EMAILS:
        yield "extraction", f"What date is mentioned in this email, and what happens on it?\n\n{e}"
        yield "extraction", f"Extract every amount of money from this email and say what it is for: {e}"
        yield "extraction", f"Write the key facts of this email as JSON with date and amount fields: {e}"
        yield "extraction", f"What does the sender of this email want me to do? \"{e}\""
    for s in MISTAKES:
        yield "extraction", f"Correct the grammar of this sentence: \"{s}\""
        yield "extraction", f"Fix the mistakes in this sentence and explain each one: {s}"
    for s, lang in itertools.product(PHRASES, ["French", "Spanish", "German", "Italian"]):
        yield "extraction", f"Translate into {lang}: \"{s}\""
    for r in RECIPES:
        yield "extraction", f"List the ingredients in this recipe:\n\n{r}"
        yield "extraction", f"Write the ingredients and quantities of this recipe as JSON: {r}"
        yield "extraction", f"How long does this recipe take, and which steps need heat? {r}"

    for m in MADE:
        yield "knowledge", f"How is {m} made?"
        yield "knowledge", f"What raw materials go into {m}, and where do they come from?"
    for job in JOBS:
        yield "knowledge", f"What does {job} do on a normal working day?"
        yield "knowledge", f"What skills does {job} need?"
    for field, terms in TERMS.items():
        for t in terms:
            yield "knowledge", f"What is {t} in {field}? Give one example."
            yield "knowledge", f"Define {t} in one sentence, then explain it more simply."
    for place in LANDMARKS:
        yield "knowledge", f"Why was {place} built, and when?"
        yield "knowledge", f"What should I know before visiting {place}?"
    for n in NUTRIENTS:
        yield "knowledge", f"What does {n} do in the body, and which foods have a lot of it?"
    for q in HEALTH:
        yield "knowledge", q
    for i in IDIOMS:
        yield "knowledge", f"What does \"{i}\" mean, and where does the saying come from?"
        yield "knowledge", f"Explain the idiom \"{i}\" with an example sentence."
    for h in HOLIDAYS:
        yield "knowledge", f"What is the origin of {h}?"
        yield "knowledge", f"How do people celebrate {h}, and why?"
    for a, b in TWINS:
        yield "knowledge", f"What is the difference between {a} and {b}?"


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


def pools(rng, bench, source=templates, exclude=()):
    """{kind: distinct requests} of every template and filler of source, without those too close to a bench prompt
    and those in exclude."""
    out = {}
    for kind, text in source(rng):
        if text not in out.setdefault(kind, []) and text not in exclude and too_close(text, bench) is None:
            out[kind].append(text)
    return out


def bench_prompts():
    with open(os.path.join(HERE, "chat_prompts.json")) as f:
        return [p["text"] for p in json.load(f)["prompts"]]


def requests(n, seed=1337, bench=None, source=templates, exclude=()):
    """n distinct requests, none too close to a bench prompt, the kinds as even as their pools allow
    (drawn in turn from each kind's shuffled pool; the puzzles' permutations alone would make hundreds)."""
    rng = random.Random(seed)
    bench = bench_prompts() if bench is None else bench
    kinds = pools(rng, bench, source, exclude)
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


SETS = {1: (1337, "train_requests.json"), 2: (1341, "train_requests_2.json")}  # --set: its default seed and file


def second_pool(rng):
    """Set 2's templates, then the first pool with the numbers set 1 drew (its seed): what set 1 left of it."""
    yield from more_templates(rng)
    yield from templates(random.Random(SETS[1][0]))


def more_requests(n, seed=SETS[2][0], bench=None):
    """Set 2: n requests drawn as requests() draws, from second_pool and never one of set 1's (the file the
    script's defaults write, data/train_requests.json), so training on both files never repeats a request."""
    bench = bench_prompts() if bench is None else bench
    first = {r["text"] for r in requests(1088, SETS[1][0], bench)}
    return requests(n, seed, bench, second_pool, first)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", type=int, choices=sorted(SETS), default=1,
                   help="2: more requests, from other templates and set 1's leftovers, none of set 1's")
    p.add_argument("--n", type=int, default=1088)
    p.add_argument("--seed", type=int, help="default 1337 for set 1, 1341 for set 2")
    p.add_argument("--out", help="default data/train_requests.json, data/train_requests_2.json for set 2")
    a = p.parse_args(argv)
    seed, name = SETS[a.set]
    a.seed = seed if a.seed is None else a.seed
    a.out = a.out or os.path.join(HERE, name)
    if a.set == 1:
        about = (f"User requests for drafter training data (train.py chat-data --prompts), written by "
                 f"data/chat_requests.py --n {a.n} --seed {a.seed} from its templates: never the bench's prompts "
                 f"(data/chat_prompts.json).")
    else:
        about = (f"More user requests for drafter training data (train.py chat-data --prompts), written by "
                 f"data/chat_requests.py --set 2 --n {a.n} --seed {a.seed} from its second templates and the "
                 f"first ones' leftovers: none of data/train_requests.json's, never the bench's prompts "
                 f"(data/chat_prompts.json).")
    try:
        made = (requests if a.set == 1 else more_requests)(a.n, a.seed)
    except ValueError as e:
        p.error(f"--n {a.n}: {e}; add templates or fillers to this file for more")
    with open(a.out + ".tmp", "w") as f:
        json.dump({"about": about, "prompts": made}, f, indent=1)
        f.write("\n")
    os.replace(a.out + ".tmp", a.out)
    print(f"wrote {a.n} requests to {os.path.relpath(a.out)}")


if __name__ == "__main__":
    main()
