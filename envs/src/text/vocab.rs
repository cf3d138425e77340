//! The word-level vocabulary of the synthetic review language and its tokenizer.
//!
//! Token ids: `<pad>` 0, `<bos>` 1, `<eos>` 2, `<sep>` 3, then every word of [`WORDS`] in order.
//! Text is words separated by spaces; `.`, `,` and `:` are words of their own and may be
//! written against the word before them (`"good."` is `good .`). Encoding an unknown word is an
//! error that names the word and its position; decoding writes one space between words.

use thiserror::Error;

/// The four special tokens, in id order.
pub const SPECIALS: [&str; 4] = ["<pad>", "<bos>", "<eos>", "<sep>"];
pub const PAD: u32 = 0;
pub const BOS: u32 = 1;
pub const EOS: u32 = 2;
pub const SEP: u32 = 3;

/// What each word is to the grammar and the judge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// A thing a prompt asks to review.
    Subject,
    /// A part of a thing (its story, its service).
    Aspect,
    Positive,
    Negative,
    /// A neutral adjective (long, new): grammatical, no sentiment.
    Neutral,
    Intensifier,
    /// `not`: flips the sentiment of the adjective it precedes.
    Negator,
    Determiner,
    /// is, was, felt, seemed …
    Verb,
    /// and, but
    Conjunction,
    /// A sentence opener (overall, honestly).
    Opener,
    /// `.` `,` `:`
    Punctuation,
    /// The words of the prompt template (review, of, positive, negative …).
    Prompt,
}

impl Class {
    /// The classes whose repeats the judge counts as repetition (and demonstrations avoid):
    /// adjectives, nouns and intensifiers.
    pub fn counts_in_repetition(self) -> bool {
        matches!(
            self,
            Class::Positive
                | Class::Negative
                | Class::Neutral
                | Class::Subject
                | Class::Aspect
                | Class::Intensifier
        )
    }
}

macro_rules! words {
    ($($class:ident: [$($w:literal),* $(,)?]),* $(,)?) => {
        /// Every word of the language with its class, in id order (ids from 4).
        pub const WORDS: &[(&str, Class)] = &[$($(($w, Class::$class),)*)*];
    };
}

words! {
    Prompt: ["review", "of", "write", "positive", "negative", "please", "about"],
    Punctuation: [".", ",", ":"],
    Determiner: ["the", "this", "that", "its", "a"],
    Verb: ["is", "was", "felt", "seemed", "looked", "sounded", "became", "remains", "proved", "stays"],
    Conjunction: ["and", "but"],
    Negator: ["not"],
    Intensifier: ["very", "really", "truly", "quite", "rather", "so", "extremely", "fairly", "deeply", "genuinely"],
    Opener: ["overall", "honestly", "frankly", "sadly", "happily", "still", "clearly", "surely"],
    Subject: [
        "film", "book", "song", "album", "restaurant", "hotel", "game", "phone", "laptop", "camera",
        "park", "museum", "show", "play", "novel", "cafe", "bakery", "concert", "series", "podcast",
        "car", "bike", "tablet", "watch", "printer", "chair", "sofa", "lamp", "jacket", "backpack",
        "tour", "course", "lecture", "festival", "exhibit", "ballet", "opera", "bistro", "market", "gym",
        "app", "website", "keyboard", "monitor", "speaker", "headset", "kettle", "blender", "oven", "tent",
        "musical", "comedy", "documentary", "gallery", "theatre", "library", "pub", "diner", "spa", "zoo",
    ],
    Aspect: [
        "story", "plot", "music", "service", "food", "staff", "design", "screen", "battery", "ending",
        "acting", "price", "room", "view", "sound", "cast", "menu", "interface", "build", "finish",
        "pacing", "dialogue", "atmosphere", "lighting", "layout", "delivery", "packaging", "manual", "support", "setup",
        "seating", "location", "decor", "portion", "flavour", "texture", "voice", "lyrics", "artwork", "script",
        "soundtrack", "chorus", "camera-work", "visuals", "performance", "writing", "sequel", "opening", "climax", "premise",
    ],
    Positive: [
        "good", "great", "excellent", "wonderful", "delightful", "brilliant", "charming", "superb", "lovely", "amazing",
        "fantastic", "pleasant", "enjoyable", "beautiful", "clever", "solid", "fresh", "smooth", "elegant", "warm",
        "friendly", "reliable", "impressive", "memorable", "moving", "gorgeous", "polished", "tasty", "crisp", "stunning",
        "marvellous", "splendid", "terrific", "inviting", "graceful", "refreshing", "thoughtful", "vivid", "sturdy", "perfect",
        "joyful", "uplifting", "witty", "gentle", "rich", "flawless", "cosy", "heartfelt", "masterful", "dazzling",
    ],
    Negative: [
        "bad", "awful", "terrible", "dull", "boring", "poor", "weak", "horrible", "bland", "mediocre",
        "clumsy", "tedious", "ugly", "noisy", "slow", "flimsy", "stale", "cold", "rude", "confusing",
        "messy", "cheap", "shallow", "forgettable", "annoying", "dreadful", "broken", "greasy", "harsh", "grim",
        "sloppy", "lifeless", "tiresome", "cramped", "overpriced", "unreliable", "painful", "dreary", "awkward", "disappointing",
        "gloomy", "sour", "bleak", "clunky", "muddled", "hollow", "grating", "soggy", "lazy", "pointless",
    ],
    Neutral: [
        "long", "short", "new", "old", "big", "small", "loud", "quiet", "modern", "simple",
        "busy", "plain", "dark", "bright", "heavy", "light", "unusual", "familiar", "local", "recent",
        "early", "late", "wide", "narrow", "formal", "casual", "urban", "rural", "digital", "classic",
    ],
}

/// An encoding or decoding error.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TokenError {
    #[error(
        "unknown word `{}` at word {position} (counting from 1) of \"{}\"",
        shortened(.word),
        shortened(.text)
    )]
    UnknownWord {
        word: String,
        position: usize,
        text: String,
    },
    #[error("token id {id} is outside the vocabulary (size {size})")]
    UnknownId { id: u32, size: usize },
}

/// `s` as an error message quotes it: its first 80 characters, and how many more there are
/// (a line of a user's file may be megabytes long), with control characters escaped (`\u{1b}`,
/// `\n`, `\0`), so that a file's text cannot move the cursor, recolour or clear a terminal,
/// and the invisible ones too (format characters such as U+200B, U+FEFF, U+00AD, and the
/// right-to-left override U+202E, which would reverse the rest of the line), so that an
/// unknown word that looks like a known one shows why.
pub fn shortened(s: &str) -> String {
    const MOST: usize = 80;
    let (head, rest) = match s.char_indices().nth(MOST) {
        None => (s, None),
        Some((cut, _)) => (&s[..cut], Some(s[cut..].chars().count())),
    };
    let mut out = String::with_capacity(head.len());
    for c in head.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else if invisible(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    if let Some(more) = rest {
        out.push_str(&format!("… ({more} more characters)"));
    }
    out
}

/// Characters that print as nothing or change how the rest prints: Unicode's format
/// characters (category Cf, as of Unicode 15), the other default-ignorable ones a terminal
/// shows as nothing, and the line and paragraph separators some terminals break lines at.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{FFF0}'..='\u{FFFB}' | '\u{E0000}'..='\u{E0FFF}' | '\u{1D173}'..='\u{1D17A}'
        | '\u{0600}'..='\u{0605}' | '\u{06DD}' | '\u{070F}' | '\u{110BD}' | '\u{13430}'..='\u{1343F}'
        | '\u{0890}' | '\u{0891}' | '\u{08E2}' | '\u{110CD}' | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{2028}' | '\u{2029}')
}

/// The vocabulary: ids ↔ words, with each word's class.
#[derive(Clone, Debug)]
pub struct Vocabulary {
    words: Vec<&'static str>,
    classes: Vec<Option<Class>>,
    index: std::collections::HashMap<&'static str, u32>,
}

impl Default for Vocabulary {
    fn default() -> Self {
        Self::new()
    }
}

impl Vocabulary {
    pub fn new() -> Self {
        let mut words: Vec<&'static str> = SPECIALS.to_vec();
        let mut classes = vec![None; SPECIALS.len()];
        for (w, c) in WORDS {
            words.push(w);
            classes.push(Some(*c));
        }
        let index = words
            .iter()
            .enumerate()
            .map(|(i, w)| (*w, i as u32))
            .collect::<std::collections::HashMap<_, _>>();
        assert_eq!(index.len(), words.len(), "every word appears once");
        Self {
            words,
            classes,
            index,
        }
    }

    /// Tokens, specials included.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    pub fn id(&self, word: &str) -> Option<u32> {
        self.index.get(word).copied()
    }

    /// The id of a word the language is known to have (panics otherwise: for code, not input).
    pub fn must(&self, word: &str) -> u32 {
        self.id(word)
            .unwrap_or_else(|| panic!("`{word}` is not in the vocabulary"))
    }

    pub fn word(&self, id: u32) -> Option<&'static str> {
        self.words.get(id as usize).copied()
    }

    /// The class of a word's id (None for the specials and ids outside the vocabulary).
    pub fn class(&self, id: u32) -> Option<Class> {
        self.classes.get(id as usize).copied().flatten()
    }

    /// Every id of a class, in id order.
    pub fn of_class(&self, class: Class) -> Vec<u32> {
        (0..self.len() as u32)
            .filter(|&i| self.class(i) == Some(class))
            .collect()
    }

    /// Splits `text` into words: on whitespace, and `.`, `,`, `:` apart from the word they end.
    fn split(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for chunk in text.split_whitespace() {
            let mut word = String::new();
            for ch in chunk.chars() {
                if matches!(ch, '.' | ',' | ':') {
                    if !word.is_empty() {
                        out.push(std::mem::take(&mut word));
                    }
                    out.push(ch.to_string());
                } else {
                    word.push(ch);
                }
            }
            if !word.is_empty() {
                out.push(word);
            }
        }
        out
    }

    /// The ids of `text`'s words (special tokens may be written by name, `<eos>`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenError> {
        Self::split(text)
            .into_iter()
            .enumerate()
            .map(|(i, w)| {
                self.id(&w).ok_or_else(|| TokenError::UnknownWord {
                    word: w.clone(),
                    position: i + 1,
                    text: text.to_string(),
                })
            })
            .collect()
    }

    /// The words of `ids`, one space between them.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenError> {
        let words: Result<Vec<&str>, TokenError> = ids
            .iter()
            .map(|&id| {
                self.word(id).ok_or(TokenError::UnknownId {
                    id,
                    size: self.len(),
                })
            })
            .collect();
        Ok(words?.join(" "))
    }
}
