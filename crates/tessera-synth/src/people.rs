//! Names and cities in several scripts.

use crate::rng::Rng;

/// One place the chain trades in: its name, and the given names and family
/// names of the people who live there (in the local script).
pub(crate) struct Locale {
    pub(crate) city: &'static str,
    given: &'static [&'static str],
    family: &'static [&'static str],
    /// Family name before the given name (as written in Chinese, Japanese).
    family_first: bool,
}

/// The chain's cities, in the order its stores open in them.
pub(crate) const LOCALES: &[Locale] = &[
    Locale {
        city: "Нижний Новгород",
        given: &[
            "Анна",
            "Мария",
            "Ольга",
            "Иван",
            "Дмитрий",
            "Сергей",
            "Елена",
            "Алексей",
        ],
        family: &["Петрова", "Иванова", "Смирнова", "Кузнецова", "Соколова", "Попова"],
        family_first: false,
    },
    Locale {
        city: "München",
        given: &[
            "Jürgen",
            "Lena",
            "Sophie",
            "Lukas",
            "Maximilian",
            "Hannah",
            "Jörg",
            "Käthe",
        ],
        family: &["Müller", "Schmidt", "Schäfer", "Weiß", "Groß", "Becker"],
        family_first: false,
    },
    Locale {
        city: "Αθήνα",
        given: &["Γιώργος", "Μαρία", "Ελένη", "Νίκος", "Κατερίνα", "Δημήτρης"],
        family: &["Παπαδοπούλου", "Γεωργίου", "Νικολάου", "Οικονόμου", "Βασιλείου"],
        family_first: false,
    },
    Locale {
        city: "東京",
        given: &["さくら", "健太", "陽菜", "翔太", "美咲", "大輔"],
        family: &["佐藤", "鈴木", "高橋", "田中", "渡辺", "伊藤"],
        family_first: true,
    },
    Locale {
        city: "القاهرة",
        given: &["محمد", "فاطمة", "أحمد", "مريم", "يوسف", "ليلى"],
        family: &["حسن", "علي", "إبراهيم", "سالم", "منصور"],
        family_first: false,
    },
    Locale {
        city: "मुंबई",
        given: &["आरव", "अनन्या", "विवान", "दीया", "अर्जुन", "प्रिया"],
        family: &["शर्मा", "पटेल", "वर्मा", "देशमुख", "जोशी"],
        family_first: false,
    },
    Locale {
        city: "São Paulo",
        given: &["João", "Maria", "Ana", "Lucas", "Gabriela", "Tomás"],
        family: &["Silva", "Conceição", "Araújo", "Gonçalves", "Simões"],
        family_first: false,
    },
    Locale {
        city: "Kraków",
        given: &["Łukasz", "Zofia", "Małgorzata", "Paweł", "Agnieszka", "Wojciech"],
        family: &["Nowak", "Wójcik", "Kamińska", "Lewandowska", "Dąbrowski"],
        family_first: false,
    },
    Locale {
        city: "Paris",
        given: &["Chloé", "Léa", "Hélène", "François", "Jérôme", "Zoé"],
        family: &["Lefèvre", "Dupont", "Bernard", "Moreau", "Girard"],
        family_first: false,
    },
    Locale {
        city: "İstanbul",
        given: &["Ayşe", "Mehmet", "Zeynep", "Çağla", "Emre", "Gül"],
        family: &["Yılmaz", "Öztürk", "Şahin", "Demir", "Çelik"],
        family_first: false,
    },
];

/// A family name of a locale.
pub(crate) fn family_name(locale: &Locale, rng: &mut Rng) -> &'static str {
    pick(locale.family, rng)
}

/// A person's full name: a given name with the household's family name.
pub(crate) fn full_name(locale: &Locale, family: &str, rng: &mut Rng) -> String {
    let given = pick(locale.given, rng);
    if locale.family_first {
        format!("{family}{given}")
    } else {
        format!("{given} {family}")
    }
}

fn pick(list: &'static [&'static str], rng: &mut Rng) -> &'static str {
    let n = u32::try_from(list.len()).unwrap_or(1);
    list.get(rng.below(n) as usize).copied().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_cities_fit_a_profile() {
        let mut r = Rng::new(1, 1, 1);
        for l in LOCALES {
            assert!(l.city.len() <= tessera_protocol::profile::MAX_CITY);
            for f in l.family {
                for _ in 0..8 {
                    let n = full_name(l, f, &mut r);
                    assert!(!n.is_empty() && n.len() <= tessera_protocol::profile::MAX_NAME, "{n}");
                }
            }
        }
    }
}
