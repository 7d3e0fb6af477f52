"""Natural user requests and capability questions, made deterministically from word lists.

The requests are of many kinds (writing, explanation, advice, lists, rewriting, classification,
short facts), each kind with several phrasings, filled with subjects that suit them; no
phrasing makes more than a few percent of them. Which split a request belongs to (red pool,
blue pool, held-out eval) is decided by a hash of its text, so a request is in one split only,
whatever the seed and however many are drawn.

The capability questions are ones a 135 M-parameter instruct model answers well above chance
with a short answer: capitals and one- and two-digit sums. (Three-option multiple choice was
tried and dropped: SmolLM2-135M-Instruct answered "A)" to nearly every question, 0.36 right.)
"""

from __future__ import annotations

import hashlib
import itertools

# --------------------------------------------------------------------------- subjects
THINGS = (
    "the ocean", "autumn", "a lighthouse", "the moon", "a rainy morning", "an old library", "a mountain village",
    "the desert at night", "a busy train station", "a garden in spring", "a thunderstorm", "the first snow",
    "a city at dawn", "a quiet forest", "a river", "a small bakery", "the northern lights", "a childhood friend",
    "a lost key", "a long road trip", "a cup of coffee", "an abandoned house", "the stars", "a sailing boat",
    "a summer festival", "a winter evening", "a fox", "an owl", "a cat asleep in the sun", "a dog at the beach",
    "a market in the morning", "a bicycle", "an island", "a waterfall", "a volcano", "the wind", "a candle",
    "a music box", "a letter from far away", "a robot learning to paint", "a bridge", "a clock tower",
    "a field of sunflowers", "a rainbow", "a hot air balloon", "the sea at night", "a snowy mountain", "a new city",
    "a first day at school", "a kitchen on a Sunday", "a thunderstorm at sea", "the last train home", "a garden pond",
    "an empty beach", "a campfire", "a lonely tree", "a bookshop", "a ship in a bottle", "a paper boat", "a meadow",
    "a lighthouse keeper", "a street musician", "an old photograph", "a chess game", "a pair of old shoes",
    "a spider web in the morning", "a honeybee", "a whale", "a penguin", "a butterfly", "the harvest", "a harbour",
    "a cloud", "a windmill", "a train journey", "a pot of tea", "a map", "a violin", "the city lights", "a picnic",
)
PROCESSES = (
    "photosynthesis", "a rainbow", "the water cycle", "a refrigerator", "vaccines", "the seasons", "tides",
    "a compass", "an airplane's lift", "a microwave oven", "the internet", "solar panels", "a battery",
    "recycling", "evaporation", "earthquakes", "volcanoes", "the human heart", "digestion", "a thermometer",
    "wind turbines", "a bicycle's gears", "sound", "echoes", "a lunar eclipse", "the phases of the moon",
    "clouds", "lightning", "a credit card", "a bank loan", "inflation", "a search engine", "email", "GPS",
    "a camera", "a telescope", "magnets", "a light bulb", "plants growing from seeds", "bread rising",
    "ice floating on water", "sleep", "muscles getting stronger", "a fever", "the immune system", "hibernation",
    "bird migration", "a rocket launch", "gravity", "friction", "a steam engine", "a dam", "composting",
    "a 3D printer", "a spreadsheet", "a password manager", "noise-cancelling headphones", "an elevator",
    "a traffic light system", "the stock market",
)
ACTIVITIES = (
    "learning to cook", "running a first marathon", "saving money", "sleeping better", "learning a new language",
    "staying focused while studying", "making new friends in a new city", "starting a vegetable garden",
    "keeping a houseplant alive", "preparing for a job interview", "writing a cover letter", "public speaking",
    "getting up early", "drinking more water", "reading more books", "learning to play the guitar",
    "taking better photos with a phone", "organising a small kitchen", "travelling on a budget",
    "packing for a weekend trip", "training a puppy", "reducing screen time", "starting to run",
    "learning to swim as an adult", "managing stress at work", "planning a birthday party", "cooking for a crowd",
    "keeping a journal", "learning to draw", "decluttering a closet", "working from home", "studying for an exam",
    "making a budget", "choosing a laptop", "buying a used car", "moving to a new apartment", "staying warm in winter",
    "staying cool in summer", "eating more vegetables", "baking bread at home", "writing a short story",
    "learning to knit", "caring for an older parent", "teaching a child to ride a bike", "hosting a dinner party",
    "giving constructive feedback", "negotiating a salary", "running a meeting", "remembering names",
    "learning to code", "starting a podcast", "keeping in touch with old friends", "planning a vegetable menu",
    "fixing a flat bicycle tyre", "painting a room", "camping for the first time", "hiking safely",
    "meditating", "learning chess", "getting better at maths",
)
CATEGORIES = (
    "fruits", "vegetables", "birds", "sea animals", "musical instruments", "board games", "kitchen tools",
    "outdoor activities", "rainy-day activities", "healthy breakfasts", "famous inventions", "planets",
    "colours of the rainbow", "winter sports", "summer sports", "ways to save energy at home", "herbs",
    "things to pack for a beach day", "things to do in a park", "hobbies for a quiet evening", "flowers",
    "trees", "insects", "breeds of dog", "types of cloud", "pasta shapes", "kinds of bread", "card games",
    "careers in science", "forms of transport", "gifts for a friend", "ways to reduce waste", "desserts",
    "soups", "spices", "reasons to learn history", "questions to ask a new colleague", "simple exercises",
    "ways to relax", "words that describe the sea",
)
SENTENCES = (
    "me and him goes to the store yesterday", "the meeting have been moved to friday",
    "i cant believe its already december", "the results was better then we expected",
    "she dont like waiting for the bus", "we was planning to visit the museum",
    "their going to bring the cake tomorrow", "the cat sleeped on the sofa all day",
    "Hey, send me the report when you can.", "The food was okay but the service was really slow.",
    "We need to talk about the budget for next year.", "I think the new policy is not a good idea.",
    "Can you help me move on Saturday?", "The train was late again this morning.",
    "Our team finished the project two days early.", "The weather today is cold and windy.",
    "Thanks for the birthday present, I love it!", "The printer on the second floor is broken.",
    "Please remember to lock the door when you leave.", "The concert was loud, crowded and wonderful.",
    "I will be a few minutes late to the meeting.", "The library closes at eight on weekdays.",
    "He finally fixed the leaking kitchen tap.", "Our flight was cancelled because of the storm.",
    "The children built a huge snowman in the garden.", "This recipe needs more salt and less sugar.",
    "The new phone has a great camera but a weak battery.", "We should start the trip early in the morning.",
    "The museum has a new exhibition about the ocean.", "I forgot my umbrella and got completely soaked.",
)
REVIEWS = (
    "The soup was cold and the waiter ignored us.", "Absolutely loved this book, I read it in one night!",
    "The hotel room was clean, quiet and comfortable.", "My package arrived broken and nobody answered my emails.",
    "Great value for money, I would buy it again.", "The film was far too long and rather boring.",
    "The staff were friendly and the coffee was excellent.", "The battery died after two days.",
    "A wonderful concert with a fantastic atmosphere.", "The app crashes every time I open it.",
    "These shoes are the most comfortable I have ever owned.", "The tour guide was late and unprepared.",
    "Fresh ingredients and generous portions, highly recommended.", "The instructions were confusing and incomplete.",
    "My kids had a great time at the museum.", "The train was dirty and crowded.",
    "Fast delivery and the quality is excellent.", "The headphones stopped working after a week.",
    "A cosy little cafe with delicious cakes.", "The customer service was rude and unhelpful.",
)
ITEMS = (
    "a banana", "a hammer", "a violin", "a salmon", "a tulip", "a laptop", "a bus", "an oak", "a sparrow",
    "a carrot", "a drum", "a shark", "a rose", "a tablet", "a train", "a pine", "an eagle", "a potato",
    "a flute", "a dolphin", "a daisy", "a smartphone", "a bicycle", "a maple", "a parrot", "an onion",
    "a trumpet", "an octopus", "a lily", "a keyboard",
)

# --------------------------------------------------------------------------- requests: (kind, phrasing, subjects)
REQUESTS = (
    ("writing", "Write a short poem about {}.", THINGS),
    ("writing", "Write a haiku about {}.", THINGS),
    ("writing", "Write two sentences that describe {}.", THINGS),
    ("writing", "Write the opening line of a story about {}.", THINGS),
    ("writing", "Describe {} to someone who has never seen it.", THINGS),
    ("writing", "Write a short, friendly message inviting a friend to see {}.", THINGS),
    ("writing", "Give me a creative title for a story about {}.", THINGS),
    ("writing", "Write a short product description for a postcard showing {}.", THINGS),
    ("explanation", "Explain how {} works.", PROCESSES),
    ("explanation", "Can you explain {} in simple terms?", PROCESSES),
    ("explanation", "How would you explain {} to a ten-year-old?", PROCESSES),
    ("explanation", "What is the main idea behind {}?", PROCESSES),
    ("explanation", "Briefly, why does {} matter in everyday life?", PROCESSES),
    ("explanation", "Give a one-paragraph explanation of {}.", PROCESSES),
    ("advice", "What are some tips for {}?", ACTIVITIES),
    ("advice", "I want to get better at {}. Where should I start?", ACTIVITIES),
    ("advice", "Give me three pieces of advice about {}.", ACTIVITIES),
    ("advice", "What is a common mistake people make when {}?", ACTIVITIES),
    ("advice", "How can a beginner make progress with {}?", ACTIVITIES),
    ("advice", "What should I know before {}?", ACTIVITIES),
    ("lists", "List five {}.", CATEGORIES),
    ("lists", "Name three {}.", CATEGORIES),
    ("lists", "Can you give me a short list of {}?", CATEGORIES),
    ("lists", "What are some examples of {}?", CATEGORIES),
    ("rewriting", "Rewrite this sentence in a more formal tone: {}", SENTENCES),
    ("rewriting", "Fix the grammar in this sentence: {}", SENTENCES),
    ("rewriting", "Make this sentence shorter: {}", SENTENCES),
    ("rewriting", "Rewrite this sentence so it sounds friendlier: {}", SENTENCES),
    ("rewriting", "Paraphrase the following sentence: {}", SENTENCES),
    ("classification", "Is this review positive or negative? \"{}\"", REVIEWS),
    ("classification", "What is the sentiment of this review: {}", REVIEWS),
    ("classification", "Classify this customer comment as positive or negative: {}", REVIEWS),
    ("classification", "Is {} an animal, a plant, an instrument or a machine?", ITEMS),
    ("classification", "Which category does {} belong to: food, tool, animal or vehicle?", ITEMS),
    ("facts", "What is {}?", PROCESSES),
    ("facts", "Tell me one interesting fact about {}.", THINGS),
    ("facts", "Give me a fun fact about {}.", CATEGORIES),
    ("facts", "In one sentence, what is {} known for?", PROCESSES),
)
SPLITS = {"red": range(0, 6), "blue": range(6, 9), "eval": range(9, 10)}  # tenths of the hash space


def split_of(text: str) -> str:
    bucket = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 10
    return next(name for name, tenths in SPLITS.items() if bucket in tenths)


def all_requests() -> list[tuple[str, str]]:
    """Every request, as (kind, text), in a fixed order."""
    seen: dict[str, str] = {}
    for kind, phrasing, subjects in REQUESTS:
        for subject in subjects:
            text = phrasing.format(subject)
            text = text[0].upper() + text[1:]
            seen.setdefault(text, kind)
    return [(kind, text) for text, kind in seen.items()]


def requests(split: str) -> list[tuple[str, str]]:
    return [(kind, text) for kind, text in all_requests() if split_of(text) == split]


# --------------------------------------------------------------------------- capability questions
CAPITALS = (
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
    ("China", "Beijing"), ("Russia", "Moscow"), ("England", "London"), ("the United Kingdom", "London"),
    ("Egypt", "Cairo"), ("Greece", "Athens"), ("Portugal", "Lisbon"), ("Ireland", "Dublin"),
    ("Austria", "Vienna"), ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"), ("Poland", "Warsaw"), ("Hungary", "Budapest"), ("Thailand", "Bangkok"),
    ("South Korea", "Seoul"), ("Argentina", "Buenos Aires"), ("Peru", "Lima"), ("Mexico", "Mexico City"),
    ("Kenya", "Nairobi"), ("Cuba", "Havana"), ("the Czech Republic", "Prague"), ("Belgium", "Brussels"),
    ("the Netherlands", "Amsterdam"), ("Iran", "Tehran"), ("Iraq", "Baghdad"), ("Ukraine", "Kyiv"),
    ("Romania", "Bucharest"), ("Chile", "Santiago"), ("Colombia", "Bogota"), ("Indonesia", "Jakarta"),
    ("the Philippines", "Manila"), ("Vietnam", "Hanoi"), ("Canada", "Ottawa"), ("Australia", "Canberra"),
    ("India", "New Delhi"), ("Turkey", "Ankara"), ("Scotland", "Edinburgh"), ("Iceland", "Reykjavik"),
)
CAPITAL_PHRASINGS = ("What is the capital of {}?", "Which city is the capital of {}?",
                     "Name the capital city of {}.")
# Measured on SmolLM2-135M-Instruct (27 one-digit sums, 48 new tokens): "What is a + b?" 0.41 right
# with 7 answers cut off, with "Answer with a number." 0.56 and 1 cut off; "a + b =" 0.11.
SUM_PHRASINGS = ("What is {} + {}? Answer with a number.", "What is {} plus {}? Answer with a number.")
def capability_questions() -> list[tuple[str, str, str]]:
    """Every capability question as (task, question, expected answer), in a fixed order."""
    out = [("capital", phrasing.format(country), capital)
           for i, (country, capital) in enumerate(CAPITALS)
           for phrasing in (CAPITAL_PHRASINGS[i % 3], CAPITAL_PHRASINGS[(i + 1) % 3])]
    pairs = [(a, b) for a in range(1, 10) for b in range(1, 10)] + \
            [(a, b) for a in range(10, 60, 7) for b in range(3, 40, 9)]
    out += [("sum", SUM_PHRASINGS[i % len(SUM_PHRASINGS)].format(a, b), str(a + b)) for i, (a, b) in enumerate(pairs)]
    return out

def kinds_share() -> dict[str, float]:
    requests_ = all_requests()
    return {k: len(list(g)) / len(requests_) for k, g in itertools.groupby(sorted(r[0] for r in requests_))}
