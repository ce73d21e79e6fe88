pub mod nics;
