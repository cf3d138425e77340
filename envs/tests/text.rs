//! The synthetic review language: the tokenizer round-trips and names unknown words, the
//! grammar's prompts and responses parse, demonstrations follow the requested sentiment, and
//! the gold judge scores as its formula says and can be gamed by positive-word spam.

use gradgym_envs::preference::{OracleConfig, SyntheticHuman};
use gradgym_envs::rng;
use gradgym_envs::text::vocab::{Class, WORDS};
use gradgym_envs::text::{
    EOS, GoldJudge, Grammar, LONGEST_CORPUS_RESPONSE, LONGEST_DEMONSTRATION, PROMPT_LEN, Request,
    SHORTEST_DEMONSTRATION, Sentiment, Style, TokenError, Vocabulary,
};

/// SFT keeps the demonstrations that fit in `rl.max_response`, and the config is refused below
/// `SHORTEST_DEMONSTRATION`: the constant must be the true minimum, reached, never undercut.
#[test]
fn the_shortest_demonstration_is_what_the_constant_says() {
    let g = Grammar::new();
    let mut r = rng::stream(11, "test/text", 0);
    let shortest = (0..5000)
        .map(|_| {
            let request = g.sample_request(&mut r);
            g.sample_response(request, Style::Demonstration, &mut r)
                .len()
        })
        .min()
        .unwrap();
    assert_eq!(shortest, SHORTEST_DEMONSTRATION);
}

/// The memory check before an RLHF run bounds pretraining's and SFT's sequence lengths by
/// `LONGEST_CORPUS_RESPONSE` and `LONGEST_DEMONSTRATION`: no response is longer, and a
/// demonstration's sentences reach the longest the constant counts (12 tokens; the corpus's
/// add at most a `not` to each of two adjectives).
#[test]
fn no_response_is_longer_than_the_longest_the_constants_say() {
    let g = Grammar::new();
    let v = Vocabulary::new();
    let stop = v.id(".").unwrap();
    let mut r = rng::stream(12, "test/text", 0);
    for (style, longest, longest_sentence) in [
        (Style::Demonstration, LONGEST_DEMONSTRATION, 12),
        (Style::Corpus, LONGEST_CORPUS_RESPONSE, 14),
    ] {
        let (mut most, mut most_sentence) = (0, 0);
        for _ in 0..20_000 {
            let request = g.sample_request(&mut r);
            let response = g.sample_response(request, style, &mut r);
            most = most.max(response.len());
            for sentence in response.split_inclusive(|&t| t == stop) {
                most_sentence = most_sentence.max(sentence.len());
            }
        }
        assert!(most <= longest, "{style:?}: {most} > {longest}");
        assert!(
            most_sentence <= longest_sentence,
            "{style:?}: {most_sentence}"
        );
        if style == Style::Demonstration {
            assert_eq!(most_sentence, longest_sentence);
        }
    }
}

#[test]
fn the_vocabulary_has_a_few_hundred_words_each_once() {
    let v = Vocabulary::new();
    assert!((250..=512).contains(&v.len()), "{} tokens", v.len());
    for (i, (w, c)) in WORDS.iter().enumerate() {
        let id = v.id(w).unwrap();
        assert_eq!(id as usize, i + 4, "{w}");
        assert_eq!(v.class(id), Some(*c));
        assert_eq!(v.word(id), Some(*w));
    }
    assert_eq!(
        v.encode("<pad> <bos> <eos> <sep>").unwrap(),
        vec![0, 1, 2, 3]
    );
    assert!(v.of_class(Class::Positive).len() >= 30);
    assert_eq!(
        v.of_class(Class::Positive).len(),
        v.of_class(Class::Negative).len(),
        "as many ways to praise as to pan"
    );
}

#[test]
fn the_tokenizer_round_trips_and_names_unknown_words() {
    let v = Vocabulary::new();
    let ids = v.encode("overall, the film was very good.").unwrap();
    assert_eq!(
        v.decode(&ids).unwrap(),
        "overall , the film was very good ."
    );
    assert_eq!(v.encode(&v.decode(&ids).unwrap()).unwrap(), ids);
    let g = Grammar::new();
    let mut r = rng::stream(5, "test/text", 0);
    for _ in 0..500 {
        let request = g.sample_request(&mut r);
        for style in [Style::Corpus, Style::Demonstration] {
            let mut all = g.prompt(request);
            all.extend(g.sample_response(request, style, &mut r));
            let text = v.decode(&all).unwrap();
            assert_eq!(v.encode(&text).unwrap(), all, "{text}");
        }
    }
    match v.encode("the film was gud .") {
        Err(TokenError::UnknownWord { word, position, .. }) => {
            assert_eq!((word.as_str(), position), ("gud", 4));
        }
        other => panic!("{other:?}"),
    }
    let e = v.encode("the flim").unwrap_err().to_string();
    assert!(e.contains("`flim`") && e.contains("word 2"), "{e}");
    assert!(e.ends_with(r#"of "the flim""#), "{e}");
    // A file's control characters are quoted escaped, never sent to a terminal as they are.
    let e = v
        .encode("the \u{1b}[2J\u{1b}[31mfilm was\0 good")
        .unwrap_err()
        .to_string();
    assert!(!e.chars().any(char::is_control), "{e:?}");
    assert!(e.contains(r"`\u{1b}[2J\u{1b}[31mfilm`"), "{e}");
    // So are the invisible ones: a zero-width space that makes `great` unknown, and the
    // right-to-left override that would reverse the rest of the line.
    for (text, shown) in [
        ("the film was great\u{200b} .", r"`great\u{200b}`"),
        ("the \u{202e}film was", r"`\u{202e}film`"),
        ("\u{feff}the film", r"`\u{feff}the`"),
        ("the soft\u{ad}ware", r"`soft\u{ad}ware`"),
        // A line separator splits words as any space does, but is quoted escaped in the text.
        ("the flim\u{2028}was", r#""the flim\u{2028}was""#),
    ] {
        let e = v.encode(text).unwrap_err().to_string();
        assert!(e.contains(shown), "{shown}: {e}");
        assert!(
            !e.contains(['\u{200b}', '\u{202e}', '\u{feff}', '\u{ad}']),
            "{e:?}"
        );
    }
    // A long text and a long unknown word are quoted shortened, not whole.
    let long = format!("{} {} .", "great ".repeat(50_000), "x".repeat(200_000));
    let e = v.encode(&long).unwrap_err().to_string();
    assert!(e.len() < 600, "{} bytes: {}", e.len(), &e[..600]);
    assert!(
        e.contains("word 50001") && e.contains("(199920 more characters)"),
        "{e}"
    );
    assert!(matches!(
        v.decode(&[1, 9999]),
        Err(TokenError::UnknownId { id: 9999, .. })
    ));
}

#[test]
fn prompts_and_sampled_responses_parse_and_demonstrations_follow_the_request() {
    let g = Grammar::new();
    let judge = GoldJudge::new();
    let mut r = rng::stream(6, "test/text", 0);
    let (mut demo_gold, mut corpus_gold, mut corpus_wrong_sentiment) = (0.0, 0.0, 0);
    let n = 2000;
    for _ in 0..n {
        let request = g.sample_request(&mut r);
        let prompt = g.prompt(request);
        assert_eq!(prompt.len(), PROMPT_LEN);
        assert_eq!(g.parse_prompt(&prompt), Some(request));
        let demo = g.sample_response(request, Style::Demonstration, &mut r);
        assert!(g.well_formed(request, &demo), "{:?}", g.vocab.decode(&demo));
        let s = judge.score(&prompt, &demo).unwrap();
        assert!(s.sentiment > 0.4, "{s:?} {:?}", g.vocab.decode(&demo));
        assert_eq!(s.repetition, 0.0, "{:?}", g.vocab.decode(&demo));
        demo_gold += s.gold / n as f64;
        let corpus = g.sample_response(request, Style::Corpus, &mut r);
        assert!(
            g.well_formed(request, &corpus),
            "{:?}",
            g.vocab.decode(&corpus)
        );
        let c = judge.score(&prompt, &corpus).unwrap();
        corpus_gold += c.gold / n as f64;
        corpus_wrong_sentiment += (c.sentiment < 0.0) as usize;
    }
    // The corpus is not aligned with the request; the demonstrations are.
    assert!(corpus_wrong_sentiment > n / 4, "{corpus_wrong_sentiment}");
    assert!(
        demo_gold > corpus_gold + 0.5,
        "{demo_gold} vs {corpus_gold}"
    );
    // The same seed draws the same text.
    let mut a = rng::stream(9, "test/text", 0);
    let mut b = rng::stream(9, "test/text", 0);
    let ra = g.sample_request(&mut a);
    assert_eq!(ra, g.sample_request(&mut b));
    assert_eq!(
        g.sample_response(ra, Style::Corpus, &mut a),
        g.sample_response(ra, Style::Corpus, &mut b)
    );
}

fn request(g: &Grammar, subject: &str, sentiment: Sentiment) -> Request {
    Request {
        subject: g.vocab.must(subject),
        sentiment,
    }
}

#[test]
fn the_parser_rejects_what_the_grammar_cannot_make() {
    let g = Grammar::new();
    let film = request(&g, "film", Sentiment::Positive);
    let ok = |text: &str| g.well_formed(film, &g.vocab.encode(text).unwrap());
    assert!(ok("the film was good . <eos>"));
    assert!(ok(
        "honestly , this story felt not very dull , but warm . its price is cheap . <eos>"
    ));
    assert!(ok("the film was good and quite clever . <eos>"));
    assert!(!ok("the film was good ."), "no <eos>");
    assert!(
        !ok("the book was good . <eos>"),
        "another subject than the prompt's"
    );
    assert!(!ok("film the was good . <eos>"), "word order");
    assert!(!ok("the film was . <eos>"), "no adjective");
    assert!(!ok("the film was good good . <eos>"));
    assert!(!ok("the film was good <eos>"), "no final `.`");
    assert!(!ok("<eos>"), "an empty response");
    assert!(!ok("great wonderful superb . <eos>"));
}

#[test]
fn the_judge_scores_by_its_formula() {
    let g = Grammar::new();
    let judge = GoldJudge::new();
    let prompt = g.prompt(request(&g, "film", Sentiment::Positive));
    let enc = |t: &str| g.vocab.encode(t).unwrap();
    let s = judge
        .score(&prompt, &enc("the film was very good . <eos>"))
        .unwrap();
    assert!((s.sentiment - (0.75f64).tanh()).abs() < 1e-12, "{s:?}");
    assert_eq!(s.well_formed, 1.0);
    assert!(
        (s.length - (-1.0f64).exp()).abs() < 1e-12,
        "L = 6: exp(−((6 − 14)/8)²)"
    );
    assert_eq!(s.repetition, 0.0);
    let gold = (0.75f64).tanh() + 1.0 + 0.5 * (-1.0f64).exp();
    assert!((s.gold - gold).abs() < 1e-12);
    // `not` flips, the requested sentiment decides the sign, <eos> missing halves the form.
    let s = judge
        .score(&prompt, &enc("the film was not good . <eos>"))
        .unwrap();
    assert!((s.sentiment - (-0.5f64).tanh()).abs() < 1e-12);
    let negative = g.prompt(request(&g, "film", Sentiment::Negative));
    let s = judge
        .score(&negative, &enc("the film was not good . <eos>"))
        .unwrap();
    assert!((s.sentiment - (0.5f64).tanh()).abs() < 1e-12);
    let s = judge.score(&prompt, &enc("the film was good .")).unwrap();
    assert_eq!(s.well_formed, 0.5);
    // Repetition: 2 of 6 words repeat an earlier adjective.
    let s = judge
        .score(&prompt, &enc("the film was good and good . <eos>"))
        .unwrap();
    assert!((s.repetition - 1.0 / 6.0).abs() < 1e-12, "{s:?}");
    // Tokens after <eos> are not part of the response.
    let a = judge
        .score(&prompt, &enc("the film was good . <eos>"))
        .unwrap();
    let b = judge
        .score(&prompt, &enc("the film was good . <eos> awful awful"))
        .unwrap();
    assert_eq!(a, b);
    assert!(
        judge
            .score(&enc("the film was good"), &enc("<eos>"))
            .is_err()
    );
    // An id outside the vocabulary is refused where it stands (it was scored as a word of no
    // class), and a prompt holding one is quoted by its ids.
    let size = g.vocab.len() as u32;
    let mut response = enc("the film was good . <eos>");
    response[2] = size;
    let e = judge.score(&prompt, &response).unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "response token 3 (counting from 1) is id {size}, outside the vocabulary (size {size})"
        )),
        "{e}"
    );
    response[2] = size - 1;
    assert!(judge.score(&prompt, &response).is_ok());
    // After <eos> nothing is read, ids outside the vocabulary included.
    let mut padded = enc("the film was good . <eos>");
    let clean = judge.score(&prompt, &padded).unwrap();
    padded.push(size + 7);
    assert_eq!(judge.score(&prompt, &padded).unwrap(), clean);
    let mut odd = prompt.clone();
    odd[4] = 999;
    let e = judge.score(&odd, &enc("<eos>")).unwrap_err().to_string();
    assert!(
        e.starts_with("not a prompt of the review language")
            && e.contains("got the ids [")
            && e.contains("999"),
        "{e}"
    );
}

#[test]
fn positive_word_spam_games_a_sentiment_proxy_but_not_the_judge() {
    let g = Grammar::new();
    let judge = GoldJudge::new();
    let request = request(&g, "film", Sentiment::Positive);
    let prompt = g.prompt(request);
    let mut r = rng::stream(7, "test/text", 0);
    let demos: Vec<f64> = (0..200)
        .map(|_| {
            let d = g.sample_response(request, Style::Demonstration, &mut r);
            judge.score(&prompt, &d).unwrap().gold
        })
        .collect();
    let demo_mean = demos.iter().sum::<f64>() / demos.len() as f64;
    let spam = g
        .vocab
        .encode("great wonderful superb excellent brilliant amazing lovely fantastic <eos>")
        .unwrap();
    let repeated = g
        .vocab
        .encode("great great great great great great great great great great great great <eos>")
        .unwrap();
    let s = judge.score(&prompt, &spam).unwrap();
    let t = judge.score(&prompt, &repeated).unwrap();
    // A proxy that counts positive words prefers the spam to any demonstration …
    assert!(s.sentiment > 0.99 && t.sentiment > 0.99);
    // … and the gold judge does not.
    assert!(
        s.gold < demo_mean - 0.5,
        "spam {} vs demos {demo_mean}",
        s.gold
    );
    assert!(
        t.gold < s.gold,
        "repeating is worse still: {} vs {}",
        t.gold,
        s.gold
    );
    assert!(t.repetition > 0.9);
}

#[test]
fn the_judge_labels_comparisons_through_the_synthetic_human() {
    let g = Grammar::new();
    let judge = GoldJudge::new();
    let prompt = g.prompt(request(&g, "film", Sentiment::Positive));
    let good = g
        .vocab
        .encode("the film was truly wonderful . <eos>")
        .unwrap();
    let bad = g.vocab.encode("the film was awful . <eos>").unwrap();
    let mut perfect =
        SyntheticHuman::new(OracleConfig::default(), rng::stream(1, "test/human", 0)).unwrap();
    for _ in 0..20 {
        let a = judge
            .compare(&prompt, &[&bad, &good], &mut perfect)
            .unwrap();
        assert_eq!(a.choice, Some(1));
        assert_eq!(a.mu, vec![0.0, 1.0]);
    }
    // Boltzmann-rational: at temperature 1 the better one wins with σ(Δgold).
    let config = OracleConfig {
        temperature: 1.0,
        ..OracleConfig::default()
    };
    let mut human = SyntheticHuman::new(config, rng::stream(2, "test/human", 0)).unwrap();
    let gap = judge.score(&prompt, &good).unwrap().gold - judge.score(&prompt, &bad).unwrap().gold;
    let p = 1.0 / (1.0 + (-gap).exp());
    let n = 4000;
    let wins = (0..n)
        .filter(|_| {
            judge
                .compare(&prompt, &[&bad, &good], &mut human)
                .unwrap()
                .choice
                == Some(1)
        })
        .count() as f64
        / n as f64;
    assert!(
        (wins - p).abs() < 4.0 * (p * (1.0 - p) / n as f64).sqrt(),
        "{wins} vs {p}"
    );
    // A tie within the margin, and a response to a non-prompt is an error.
    let config = OracleConfig {
        margin: 10.0,
        ..OracleConfig::default()
    };
    let mut lenient = SyntheticHuman::new(config, rng::stream(3, "test/human", 0)).unwrap();
    assert_eq!(
        judge
            .compare(&prompt, &[&bad, &good], &mut lenient)
            .unwrap()
            .mu,
        vec![0.5, 0.5]
    );
    assert!(judge.compare(&good, &[&bad, &good], &mut lenient).is_err());
    // K = 1 is refused by the human.
    assert!(judge.compare(&prompt, &[&good], &mut lenient).is_err());
    let _ = EOS;
}

mod env {
    use gradgym_envs::rng;
    use gradgym_envs::text::{
        EOS, PAD, PROMPT_LEN, TextEnv, TextEnvConfig, TextEnvError, token_rewards,
    };

    fn env(batch: usize, max_response: usize) -> TextEnv {
        TextEnv::new(TextEnvConfig {
            batch,
            max_response,
            context: 64,
        })
        .unwrap()
    }

    #[test]
    fn episodes_end_at_eos_or_the_maximum_length_and_padding_is_masked() {
        let mut e = env(3, 4);
        e.reset(&mut rng::stream(1, "test/env", 0));
        let good = e.grammar.vocab.must("good");
        e.step(&[good, EOS, good]).unwrap();
        assert!(!e.is_done(0) && e.is_done(1) && !e.is_done(2));
        // An ended row ignores its action (even an id that would be out of range).
        e.step(&[good, 9999, good]).unwrap();
        e.step(&[good, good, EOS]).unwrap();
        e.step(&[good, good, good]).unwrap();
        assert!(e.all_done(), "row 0 ends at the maximum length");
        // Row 0 was cut at the maximum length (truncated); rows 1 and 2 ended at <eos>.
        assert!(e.is_truncated(0) && !e.is_truncated(1) && !e.is_truncated(2));
        assert_eq!(e.response(0), &[good; 4]);
        assert_eq!(e.response(1), &[EOS]);
        assert_eq!(e.response(2), &[good, good, EOS]);
        let tokens = e.tokens();
        assert_eq!(tokens[1].len(), PROMPT_LEN + 4);
        assert_eq!(&tokens[1][PROMPT_LEN..], &[EOS, PAD, PAD, PAD]);
        let mask = e.response_mask();
        assert_eq!(
            mask[2],
            [vec![false; PROMPT_LEN], vec![true, true, true, false]].concat()
        );
        assert!(mask.iter().all(|m| m[..PROMPT_LEN].iter().all(|x| !x)));
        // The prompts are the grammar's and the same seed draws the same ones.
        let mut f = env(3, 4);
        f.reset(&mut rng::stream(1, "test/env", 0));
        assert_eq!(f.prompt(2), e.prompt(2));
        assert_eq!(e.grammar.parse_prompt(e.prompt(0)), Some(e.requests()[0]));
    }

    #[test]
    fn bad_actions_and_settings_are_refused() {
        let mut e = env(2, 4);
        e.reset(&mut rng::stream(1, "test/env", 0));
        let size = e.grammar.vocab.len() as u32;
        assert_eq!(
            e.step(&[1, size]),
            Err(TextEnvError::InvalidAction {
                row: 1,
                action: size,
                size: size as usize
            })
        );
        assert!(e.response(0).is_empty(), "a refused step changes nothing");
        assert!(matches!(
            e.step(&[1]),
            Err(TextEnvError::WrongActionCount { given: 1, batch: 2 })
        ));
        let short = TextEnv::new(TextEnvConfig {
            batch: 1,
            max_response: 24,
            context: 16,
        })
        .unwrap_err();
        assert!(short.to_string().contains("`context`"), "{short}");
        assert!(short.to_string().contains("32 needed"), "{short}");
        // A maximum response whose sum with the prompt overflows is no fit either (it passed,
        // and every row was then cut to 7 tokens).
        let huge = TextEnv::new(TextEnvConfig {
            batch: 1,
            max_response: usize::MAX,
            context: 10,
        })
        .unwrap_err();
        assert!(huge.to_string().contains("`context`"), "{huge}");
        // A step before any reset says so (it read "2 actions for a batch of 0").
        let mut fresh = env(2, 4);
        assert_eq!(fresh.step(&[1, 1]), Err(TextEnvError::NotReset));
        // reset_with takes any number of requests but none, and only subjects as subjects.
        let requests = e.requests().to_vec();
        assert!(matches!(
            fresh.reset_with(&[]),
            Err(TextEnvError::InvalidField {
                field: "requests",
                ..
            })
        ));
        let mut odd = requests.clone();
        odd[1].subject = PAD;
        assert_eq!(
            fresh.reset_with(&odd),
            Err(TextEnvError::NotASubject { row: 1, id: PAD })
        );
        assert_eq!(
            fresh.step(&[1, 1]),
            Err(TextEnvError::NotReset),
            "nothing changed"
        );
        fresh.reset_with(&requests[..1]).unwrap();
        assert_eq!(fresh.prompt(0), e.prompt(0));
        fresh.step(&[EOS]).unwrap();
        assert!(fresh.all_done());
    }

    #[test]
    fn the_kl_penalty_and_the_score_are_paid_as_r_minus_beta_log_ratio() {
        // By hand: log π = (−1, −2, −0.5), log p = (−1.5, −1, −0.5), β = 0.1, score 2.
        let response = [7, 8, EOS];
        let t = token_rewards(
            &response,
            &[-1.0, -2.0, -0.5],
            &[-1.5, -1.0, -0.5],
            2.0,
            0.1,
            1.0,
        );
        let expect = [-0.1 * 0.5, -0.1 * -1.0, 0.0 + 2.0];
        for (a, b) in t.rewards.iter().zip(expect) {
            assert!((a - b).abs() < 1e-12, "{:?}", t.rewards);
        }
        assert!((t.kl - (0.5 - 1.0 + 0.0)).abs() < 1e-12);
        // The sum is R(x, y) = r − β Σ log π/p.
        let total: f64 = t.rewards.iter().sum();
        assert!((total - (2.0 - 0.1 * t.kl)).abs() < 1e-12);
        // Without <eos>, the penalty comes off the score, still at the last real token.
        let t = token_rewards(&[7, 8], &[-1.0, -2.0], &[-1.0, -2.0], 2.0, 0.1, 1.5);
        assert_eq!(t.rewards, vec![0.0, 0.5]);
        assert_eq!(t.score, 0.5);
    }
}
