//! Authorisation rules: (subject) x (repository glob) x (actions). Allow-only: a principal may do
//! what the union of its matching rules grants, nothing else. No I/O, no HTTP.

use std::fmt;
use std::str::FromStr;

/// Something a caller may do to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Read manifests, blobs, tags and referrers; see the repository in the catalog.
    Pull,
    /// Upload blobs and push manifests and tags.
    Push,
    /// Delete manifests, tags and blobs.
    Delete,
    /// Be the target of a promotion (`POST /api/v1/promotions`).
    Promote,
    /// Read gated manifests without the gate, as a vulnerability scanner must. Implies `pull`.
    Scanner,
    /// Everything above, and the administrative endpoints.
    Admin,
}

impl Action {
    /// Every action, in the order of their bits.
    pub const ALL: [Action; 6] = [Action::Pull, Action::Push, Action::Delete, Action::Promote, Action::Scanner, Action::Admin];

    /// The name used in configuration and token scopes.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
            Action::Promote => "promote",
            Action::Scanner => "scanner",
            Action::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = String;

    fn from_str(text: &str) -> Result<Action, String> {
        Action::ALL
            .into_iter()
            .find(|action| action.as_str() == text)
            .ok_or_else(|| format!("expected one of pull, push, delete, promote, scanner, admin, found {text:?}"))
    }
}

/// A set of actions. `admin` implies every action and `scanner` implies `pull`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Actions(u8);

impl Actions {
    /// No action.
    pub const NONE: Actions = Actions(0);

    /// The set of `actions` as written (without implications).
    pub fn of(actions: &[Action]) -> Actions {
        Actions(actions.iter().fold(0, |bits, action| bits | action.bit()))
    }

    /// Whether the set allows `action`, counting implications.
    pub fn allows(self, action: Action) -> bool {
        let implied = match action {
            Action::Pull => Action::Pull.bit() | Action::Scanner.bit() | Action::Admin.bit(),
            other => other.bit() | Action::Admin.bit(),
        };
        self.0 & implied != 0
    }

    /// Both sets together.
    pub fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The actions in the set, as written (without implications).
    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |action| self.0 & action.bit() != 0)
    }
}

/// Who a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// `anonymous`: everyone, logged in or not (so anonymous pull of a namespace is one rule).
    Anyone,
    /// `authenticated`: every caller who logged in.
    Authenticated,
    /// `user:NAME`: a user of the htpasswd file.
    User(String),
    /// `group:NAME`: members of a group of `[auth.groups]`.
    Group(String),
    /// `role:NAME`: OIDC identities whose claims match the role's claim rule.
    Role(String),
    /// `cert:NAME`: TLS clients whose verified certificate has this common name.
    Cert(String),
}

impl FromStr for Subject {
    type Err = String;

    fn from_str(text: &str) -> Result<Subject, String> {
        let named = |kind: &str, name: &str| {
            if name.is_empty() {
                Err(format!("subject {text:?}: expected a name after {kind}:"))
            } else {
                Ok(name.to_owned())
            }
        };
        match text.split_once(':') {
            None if text == "anonymous" => Ok(Subject::Anyone),
            None if text == "authenticated" => Ok(Subject::Authenticated),
            Some(("user", name)) => Ok(Subject::User(named("user", name)?)),
            Some(("group", name)) => Ok(Subject::Group(named("group", name)?)),
            Some(("role", name)) => Ok(Subject::Role(named("role", name)?)),
            Some(("cert", name)) => Ok(Subject::Cert(named("cert", name)?)),
            _ => Err(format!(
                "subject {text:?}: expected anonymous, authenticated, user:NAME, group:NAME, role:NAME or cert:NAME"
            )),
        }
    }
}

/// Who is asking, as far as rules are concerned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// `None` for anonymous callers.
    pub user: Option<String>,
    /// Groups (`[auth.groups]`) of a user.
    pub groups: Vec<String>,
    /// Roles (OIDC claim rules) of an OIDC identity.
    pub roles: Vec<String>,
    /// Common name of a verified TLS client certificate.
    pub cert: Option<String>,
}

/// One rule: subjects x repository globs x actions.
#[derive(Debug, Clone)]
pub struct Rule {
    subjects: Vec<Subject>,
    repositories: Vec<(String, globset::GlobMatcher)>,
    actions: Actions,
}

impl Rule {
    /// A rule from its parts as written; globs follow the namespace patterns (`*` within one
    /// path component, `**` across several).
    pub fn new(subjects: &[String], repositories: &[String], actions: &[String]) -> Result<Rule, String> {
        if subjects.is_empty() || repositories.is_empty() || actions.is_empty() {
            return Err("a rule needs subjects, repositories and actions".to_owned());
        }
        let subjects = subjects.iter().map(|s| s.parse()).collect::<Result<Vec<Subject>, String>>()?;
        let repositories = repositories
            .iter()
            .map(|pattern| {
                let glob = globset::GlobBuilder::new(pattern)
                    .literal_separator(true)
                    .build()
                    .map_err(|err| format!("repository pattern {pattern:?}: {err}"))?;
                Ok((pattern.clone(), glob.compile_matcher()))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let actions = actions.iter().map(|a| a.parse()).collect::<Result<Vec<Action>, String>>()?;
        Ok(Rule { subjects, repositories, actions: Actions::of(&actions) })
    }

    fn applies_to(&self, identity: &Identity) -> bool {
        self.subjects.iter().any(|subject| match subject {
            Subject::Anyone => true,
            Subject::Authenticated => identity.user.is_some() || identity.cert.is_some(),
            Subject::User(name) => identity.user.as_deref() == Some(name.as_str()),
            Subject::Group(name) => identity.groups.iter().any(|g| g == name),
            Subject::Role(name) => identity.roles.iter().any(|r| r == name),
            Subject::Cert(name) => identity.cert.as_deref() == Some(name.as_str()),
        })
    }

    fn covers(&self, repo: &str) -> bool {
        self.repositories.iter().any(|(_, matcher)| matcher.is_match(repo))
    }
}

/// Every rule of the configuration.
#[derive(Debug, Clone, Default)]
pub struct Rules(Vec<Rule>);

impl Rules {
    /// The rules, in any order (they only add up).
    pub fn new(rules: Vec<Rule>) -> Rules {
        Rules(rules)
    }

    /// What `identity` may do to `repo`: the union of every matching rule.
    pub fn actions(&self, identity: &Identity, repo: &str) -> Actions {
        self.0
            .iter()
            .filter(|rule| rule.applies_to(identity) && rule.covers(repo))
            .fold(Actions::NONE, |acc, rule| acc.union(rule.actions))
    }

    /// Whether some rule lets `identity` do `action` to `repo`.
    pub fn allows(&self, identity: &Identity, action: Action, repo: &str) -> bool {
        self.actions(identity, repo).allows(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(subjects: &[&str], repos: &[&str], actions: &[&str]) -> Rule {
        let owned = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        Rule::new(&owned(subjects), &owned(repos), &owned(actions)).unwrap()
    }

    #[test]
    fn decisions() {
        let rules = Rules::new(vec![
            rule(&["anonymous"], &["public/**"], &["pull"]),
            rule(&["user:alice"], &["build/**"], &["pull", "push"]),
            rule(&["group:admins"], &["**"], &["admin"]),
            rule(&["role:release"], &["prod/app"], &["promote"]),
            rule(&["role:scanner"], &["**"], &["scanner"]),
            rule(&["authenticated"], &["team/*"], &["pull"]),
            rule(&["cert:kubelet"], &["build/**"], &["pull"]),
        ]);
        let anonymous = Identity::default();
        let alice = Identity { user: Some("alice".into()), ..Identity::default() };
        let root = Identity { user: Some("root".into()), groups: vec!["admins".into()], ..Identity::default() };
        let ci = Identity { user: Some("github:repo:x".into()), roles: vec!["release".into()], ..Identity::default() };
        let scanner = Identity { user: Some("trivy".into()), roles: vec!["scanner".into()], ..Identity::default() };
        let kubelet = Identity { cert: Some("kubelet".into()), ..Identity::default() };
        let stranger = Identity { cert: Some("other".into()), ..Identity::default() };
        let cases: Vec<(&Identity, Action, &str, bool)> = vec![
            (&anonymous, Action::Pull, "public/base", true),
            (&anonymous, Action::Pull, "public/a/b", true),
            (&anonymous, Action::Push, "public/base", false),
            (&anonymous, Action::Pull, "build/app", false),
            (&anonymous, Action::Pull, "team/app", false),
            (&alice, Action::Pull, "public/base", true),
            (&alice, Action::Push, "build/app", true),
            (&alice, Action::Push, "build/team/app", true),
            (&alice, Action::Delete, "build/app", false),
            (&alice, Action::Push, "prod/app", false),
            (&alice, Action::Pull, "team/app", true),
            (&alice, Action::Pull, "team/app/sub", false),
            (&root, Action::Delete, "prod/app", true),
            (&root, Action::Promote, "prod/app", true),
            (&root, Action::Scanner, "prod/app", true),
            (&ci, Action::Promote, "prod/app", true),
            (&ci, Action::Push, "prod/app", false),
            (&ci, Action::Promote, "prod/other", false),
            (&scanner, Action::Pull, "prod/app", true),
            (&scanner, Action::Scanner, "prod/app", true),
            (&scanner, Action::Push, "prod/app", false),
            (&kubelet, Action::Pull, "build/app", true),
            (&kubelet, Action::Push, "build/app", false),
            (&kubelet, Action::Pull, "team/app", true),
            (&stranger, Action::Pull, "build/app", false),
            (&stranger, Action::Pull, "public/base", true),
        ];
        for (identity, action, repo, expected) in cases {
            assert_eq!(rules.allows(identity, action, repo), expected, "{identity:?} {action} {repo}");
        }
    }

    #[test]
    fn bad_rules_are_refused() {
        let owned = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let err = Rule::new(&owned(&["users:alice"]), &owned(&["**"]), &owned(&["pull"])).unwrap_err();
        assert!(err.contains("expected anonymous, authenticated"), "{err}");
        assert!(Rule::new(&owned(&["cert:kubelet"]), &owned(&["**"]), &owned(&["pull"])).is_ok());
        let err = Rule::new(&owned(&["user:alice"]), &owned(&["**"]), &owned(&["write"])).unwrap_err();
        assert!(err.contains("expected one of pull"), "{err}");
        let err = Rule::new(&owned(&["user:"]), &owned(&["**"]), &owned(&["pull"])).unwrap_err();
        assert!(err.contains("expected a name"), "{err}");
        assert!(Rule::new(&owned(&["user:a"]), &owned(&[]), &owned(&["pull"])).is_err());
    }
}
