//! The fixture is deterministic from its seed and writes what its family's loaders expect.

use shrink_fixture::{write_model, Family};

fn files(family: Family, seed: u64) -> Vec<Vec<u8>> {
    let tmp = tempfile::tempdir().unwrap();
    write_model(tmp.path(), family, seed).unwrap();
    ["config.json", "tokenizer.json", "model.safetensors"].map(|f| std::fs::read(tmp.path().join(f)).unwrap()).to_vec()
}

#[test]
fn same_seed_same_folder_other_seed_other_weights() {
    for family in Family::ALL {
        let a = files(family, 1);
        assert!(a == files(family, 1), "{family:?}: two folders from seed 1 differ");
        let b = files(family, 2);
        assert_eq!(a[..2], b[..2], "{family:?}: the seed changes only the weights");
        assert_ne!(a[2], b[2], "{family:?}: seeds 1 and 2 gave the same weights");
    }
}

#[test]
fn tokenizers_wrap_texts_in_their_family_specials() {
    for (family, first, last) in [(Family::Bert, "[CLS]", "[SEP]"), (Family::Roberta, "<s>", "</s>")] {
        let tmp = tempfile::tempdir().unwrap();
        write_model(tmp.path(), family, 0).unwrap();
        let tok = tokenizers::Tokenizer::from_file(tmp.path().join("tokenizer.json")).unwrap();
        let enc = tok.encode("The government said the market would", true).unwrap();
        let tokens = enc.get_tokens();
        assert_eq!((tokens[0].as_str(), tokens[tokens.len() - 1].as_str()), (first, last), "{family:?}: {tokens:?}");
        // Common words are whole tokens, so sequences are short as with a real vocabulary.
        assert!(tokens.len() <= 10, "{family:?}: {tokens:?}");
        let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(tmp.path().join("config.json")).unwrap()).unwrap();
        assert_eq!(cfg["vocab_size"].as_u64().unwrap() as usize, tok.get_vocab_size(true));
    }
}
