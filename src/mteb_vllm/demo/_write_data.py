"""Writes the demo data files (run once; the files are committed). Sentences written for this project."""

import json
import os

HERE = os.path.join(os.path.dirname(__file__), "data")

STS = [
    ("A man is playing a guitar on stage.", "A musician performs with his guitar in front of a crowd.", 4.2),
    ("A man is playing a guitar on stage.", "A woman is slicing onions in the kitchen.", 0.0),
    ("The cat sleeps on the warm windowsill.", "A cat is napping in the sun by the window.", 4.4),
    ("The cat sleeps on the warm windowsill.", "The dog chases a ball across the park.", 0.6),
    ("Children are building a sandcastle at the beach.", "Kids make a castle out of sand by the sea.", 4.8),
    ("Children are building a sandcastle at the beach.", "Children are playing football at school.", 1.4),
    ("The stock market fell sharply on Monday.", "Shares dropped steeply at the start of the week.", 4.5),
    ("The stock market fell sharply on Monday.", "The market for fresh fish opens on Monday.", 0.8),
    ("She is reading a novel in the library.", "A woman reads a book at the library.", 4.6),
    ("She is reading a novel in the library.", "She is writing a letter at home.", 1.2),
    ("Heavy rain caused flooding in the city.", "The town was flooded after a storm.", 4.0),
    ("Heavy rain caused flooding in the city.", "The city hosted a music festival.", 0.2),
    ("A chef is preparing pasta with tomato sauce.", "A cook makes spaghetti with a red sauce.", 4.3),
    ("A chef is preparing pasta with tomato sauce.", "A chef is sharpening his knives.", 1.8),
    ("The train to Berlin was delayed by two hours.", "The Berlin train arrived two hours late.", 4.7),
    ("The train to Berlin was delayed by two hours.", "We booked a flight to Rome.", 0.7),
    ("Two dogs are running through the snow.", "A pair of dogs race across a snowy field.", 4.6),
    ("Two dogs are running through the snow.", "Two cats are sitting on a fence.", 1.0),
    ("The government announced new tax cuts.", "New tax reductions were unveiled by officials.", 4.4),
    ("The government announced new tax cuts.", "The team announced a new coach.", 0.9),
    ("A boy is riding a bicycle down the hill.", "A child cycles downhill on his bike.", 4.5),
    ("A boy is riding a bicycle down the hill.", "A boy is climbing a tree.", 1.3),
    ("The scientist published her results in a journal.", "Her findings appeared in a scientific journal.", 4.2),
    ("The scientist published her results in a journal.", "The journalist interviewed a famous actor.", 0.5),
    ("An old man is feeding pigeons in the square.", "An elderly man gives bread to birds in the plaza.", 4.3),
    ("An old man is feeding pigeons in the square.", "A young woman is jogging in the park.", 0.4),
    ("The company hired fifty new engineers.", "Fifty engineers joined the firm.", 4.1),
    ("The company hired fifty new engineers.", "The company closed its office in Paris.", 1.1),
    ("A plane is taking off from the runway.", "An airplane departs from the airport.", 4.0),
    ("A plane is taking off from the runway.", "A ship is docking at the harbor.", 1.5),
    ("The baby is laughing at the puppy.", "An infant giggles while watching a young dog.", 4.4),
    ("The baby is laughing at the puppy.", "The puppy is sleeping in its basket.", 1.9),
    ("Solar panels convert sunlight into electricity.", "Photovoltaic cells turn light from the sun into power.", 4.6),
    ("Solar panels convert sunlight into electricity.", "Wind turbines are tall and white.", 1.6),
    ("He forgot his umbrella and got wet.", "He got soaked because he left his umbrella at home.", 4.5),
    ("He forgot his umbrella and got wet.", "He bought a new umbrella yesterday.", 2.0),
    ("The museum opens at nine in the morning.", "Doors of the museum open at 9 am.", 4.7),
    ("The museum opens at nine in the morning.", "The museum has a large dinosaur skeleton.", 1.4),
    ("A woman is planting tomatoes in her garden.", "She is putting tomato plants into the soil.", 4.3),
    ("A woman is planting tomatoes in her garden.", "A man is mowing the lawn.", 1.7),
]

CORPUS = {
    "d01": ("Photosynthesis", "Plants use sunlight, water and carbon dioxide to produce glucose and oxygen in their chloroplasts."),
    "d02": ("Mitochondria", "Mitochondria generate most of the cell's supply of ATP through cellular respiration."),
    "d03": ("Great Wall of China", "The Great Wall is a series of fortifications built across northern China over many centuries."),
    "d04": ("Eiffel Tower", "The Eiffel Tower is a wrought-iron lattice tower in Paris completed in 1889."),
    "d05": ("Python language", "Python is a high-level programming language known for readable syntax and a large standard library."),
    "d06": ("Rust language", "Rust is a systems programming language focused on memory safety without a garbage collector."),
    "d07": ("Black holes", "A black hole is a region of spacetime where gravity is so strong that nothing, not even light, escapes."),
    "d08": ("Mars", "Mars is the fourth planet from the Sun, with a thin atmosphere and red iron-oxide dust."),
    "d09": ("Vaccines", "Vaccines train the immune system to recognise a pathogen without causing the disease."),
    "d10": ("Insulin", "Insulin is a hormone made by the pancreas that lets cells absorb glucose from the blood."),
    "d11": ("French Revolution", "The French Revolution began in 1789 and ended the absolute monarchy in France."),
    "d12": ("Industrial Revolution", "The Industrial Revolution moved economies from hand production to machines, starting in Britain."),
    "d13": ("Coffee", "Coffee is brewed from roasted beans of the Coffea plant and contains caffeine."),
    "d14": ("Tea", "Tea is made by steeping cured leaves of Camellia sinensis in hot water."),
    "d15": ("Volcanoes", "Volcanoes form where magma from inside the Earth reaches the surface and erupts."),
    "d16": ("Earthquakes", "Earthquakes are caused by the sudden release of energy when tectonic plates slip."),
    "d17": ("Chess", "Chess is a two-player strategy board game played on a checkered board with sixty-four squares."),
    "d18": ("Football", "Association football is played by two teams of eleven players who try to score goals with a ball."),
    "d19": ("Neural networks", "Artificial neural networks learn by adjusting weights between layers of connected units."),
    "d20": ("Transformers (machine learning)", "The transformer architecture relies on self-attention to model relations between tokens."),
    "d21": ("Honey bees", "Honey bees collect nectar and pollen and communicate the location of flowers with a waggle dance."),
    "d22": ("Whales", "Whales are large marine mammals that breathe air through blowholes."),
    "d23": ("Amazon rainforest", "The Amazon is the largest tropical rainforest, spanning nine countries in South America."),
    "d24": ("Sahara", "The Sahara is the largest hot desert in the world, covering much of North Africa."),
    "d25": ("Bread baking", "Bread rises because yeast ferments sugars and releases carbon dioxide into the dough."),
    "d26": ("Cheese", "Cheese is made by curdling milk with rennet or acid and then ageing the curds."),
    "d27": ("Inflation", "Inflation is the rate at which the general level of prices for goods and services rises."),
    "d28": ("Interest rates", "Central banks raise interest rates to cool inflation and lower them to stimulate growth."),
    "d29": ("Piano", "The piano is a keyboard instrument in which hammers strike strings when keys are pressed."),
    "d30": ("Violin", "The violin is a bowed string instrument with four strings tuned in perfect fifths."),
}

QUERIES = {
    "q01": ("How do plants make food from sunlight?", {"d01": 1}),
    "q02": ("What organelle produces ATP?", {"d02": 1}),
    "q03": ("When was the Eiffel Tower built?", {"d04": 1}),
    "q04": ("memory safe systems programming language", {"d06": 1}),
    "q05": ("Why can't light escape from some regions of space?", {"d07": 1}),
    "q06": ("Which planet is red?", {"d08": 1}),
    "q07": ("How does the body regulate blood sugar?", {"d10": 1}),
    "q08": ("What ended the French monarchy?", {"d11": 1}),
    "q09": ("caffeinated drinks made from beans", {"d13": 1}),
    "q10": ("What causes the ground to shake?", {"d16": 1, "d15": 0}),
    "q11": ("board game with kings and queens", {"d17": 1}),
    "q12": ("self-attention models for language", {"d20": 1, "d19": 1}),
    "q13": ("How do bees tell each other where flowers are?", {"d21": 1}),
    "q14": ("largest desert in Africa", {"d24": 1}),
    "q15": ("Why does dough rise?", {"d25": 1}),
    "q16": ("What do central banks do about rising prices?", {"d28": 1, "d27": 1}),
    "q17": ("instrument played with a bow", {"d30": 1}),
    "q18": ("rainforest in South America", {"d23": 1}),
}


def main() -> None:
    os.makedirs(HERE, exist_ok=True)
    with open(os.path.join(HERE, "sts.jsonl"), "w", encoding="utf-8") as fh:
        for s1, s2, score in STS:
            fh.write(json.dumps({"sentence1": s1, "sentence2": s2, "score": score}) + "\n")
    with open(os.path.join(HERE, "corpus.jsonl"), "w", encoding="utf-8") as fh:
        for doc_id, (title, text) in CORPUS.items():
            fh.write(json.dumps({"id": doc_id, "title": title, "text": text}) + "\n")
    with open(os.path.join(HERE, "queries.jsonl"), "w", encoding="utf-8") as fh:
        for qid, (text, rel) in QUERIES.items():
            fh.write(json.dumps({"id": qid, "text": text, "relevant": rel}) + "\n")


if __name__ == "__main__":
    main()
