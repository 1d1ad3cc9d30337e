//! Which instruction set the engine lends its kernels: the best the CPU reports, or the cap
//! that `OPAL_ISA` in the environment (first) or `engine.isa` in the deployment sets. A cap
//! the CPU cannot run is refused, never silently lowered.

use opal_plugin_api::{
    isa::{names, ALL_ISAS},
    Isa,
};
use std::fmt;

/// The instruction set chosen for an engine, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IsaChoice {
    /// What kernels use.
    pub isa: Isa,
    /// The best this CPU offers.
    pub best: Isa,
    /// What capped it, when something did.
    pub capped_by: Option<IsaCap>,
}

/// Where a cap on the instruction set came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsaCap {
    Environment,
    Deployment,
}

/// A cap that cannot be honoured.
#[derive(Debug, thiserror::Error)]
pub enum IsaError {
    #[error("OPAL_ISA='{0}' names no instruction set opal knows: use one of {names}", names = names(ALL_ISAS))]
    UnknownName(String),
    #[error(
        "{setting} asks for {isa} kernels, but this CPU ({cpu}) cannot run them; it offers {offers}: lower the cap or remove it",
        offers = names(Isa::available())
    )]
    Unavailable {
        setting: String,
        isa: Isa,
        cpu: String,
    },
}

impl IsaChoice {
    /// Chooses from `OPAL_ISA` (when set and not empty), else `configured` (the deployment's
    /// `engine.isa`), else the best the CPU offers.
    pub fn choose(configured: Option<Isa>) -> Result<IsaChoice, IsaError> {
        let environment = std::env::var("OPAL_ISA")
            .ok()
            .filter(|name| !name.trim().is_empty());
        Self::from_settings(environment.as_deref(), configured)
    }

    fn from_settings(
        environment: Option<&str>,
        configured: Option<Isa>,
    ) -> Result<IsaChoice, IsaError> {
        let best = Isa::best();
        let (isa, capped_by, setting) = match (environment, configured) {
            (Some(name), _) => {
                let isa =
                    Isa::from_name(name).ok_or_else(|| IsaError::UnknownName(name.to_owned()))?;
                (isa, IsaCap::Environment, format!("OPAL_ISA={name}"))
            }
            (None, Some(isa)) => (isa, IsaCap::Deployment, format!("engine.isa = \"{isa}\"")),
            (None, None) => {
                return Ok(IsaChoice {
                    isa: best,
                    best,
                    capped_by: None,
                })
            }
        };
        if !isa.is_available() {
            return Err(IsaError::Unavailable {
                setting,
                isa,
                cpu: cpu_model(),
            });
        }
        Ok(IsaChoice {
            isa,
            best,
            capped_by: Some(capped_by),
        })
    }
}

impl fmt::Display for IsaChoice {
    /// `avx2 (capped by OPAL_ISA; this CPU offers avx512)`, or just `avx512`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.isa)?;
        match self.capped_by {
            None => Ok(()),
            Some(cap) => {
                let by = match cap {
                    IsaCap::Environment => "OPAL_ISA",
                    IsaCap::Deployment => "engine.isa",
                };
                write!(f, " (capped by {by}; this CPU offers {})", self.best)
            }
        }
    }
}

/// The CPU's model name as Linux reports it (`/proc/cpuinfo`), or the architecture when it
/// does not say.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, name)| name.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_cap_the_best_is_chosen() {
        let choice = IsaChoice::from_settings(None, None).unwrap();
        assert_eq!(choice.isa, Isa::best());
        assert_eq!(choice.capped_by, None);
        assert_eq!(choice.to_string(), Isa::best().name());
    }

    #[test]
    fn the_environment_wins_over_the_deployment() {
        let choice = IsaChoice::from_settings(Some("baseline"), Some(Isa::best())).unwrap();
        assert_eq!(choice.isa, Isa::Baseline);
        assert_eq!(choice.capped_by, Some(IsaCap::Environment));
        assert!(choice
            .to_string()
            .starts_with("baseline (capped by OPAL_ISA; this CPU offers"));
        let choice = IsaChoice::from_settings(None, Some(Isa::Baseline)).unwrap();
        assert_eq!(choice.capped_by, Some(IsaCap::Deployment));
    }

    #[test]
    fn an_unknown_name_and_a_cap_above_the_cpu_are_refused() {
        let e = IsaChoice::from_settings(Some("sse9"), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "OPAL_ISA='sse9' names no instruction set opal knows: use one of avx512, avx2, neon, baseline"
        );
        let missing = ALL_ISAS
            .into_iter()
            .find(|isa| !isa.is_available())
            .unwrap();
        let e = IsaChoice::from_settings(None, Some(missing)).unwrap_err();
        let message = e.to_string();
        assert!(
            message.starts_with(&format!(
                "engine.isa = \"{missing}\" asks for {missing} kernels, but this CPU ("
            )),
            "{message}"
        );
        assert!(message.contains("lower the cap or remove it"), "{message}");
    }
}
