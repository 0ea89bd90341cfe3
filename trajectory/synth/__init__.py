"""Deterministic synthetic MIMIC-IV-shaped raw data: the zero-set-up demo and scale input.

`generate(out_dir, n_patients, seed)` writes hosp/, icu/ and note/ as .csv.gz with the exact
MIMIC-IV v2.2 (and MIMIC-IV-Note) headers, real itemids, codes and units, and plausible values.
All randomness comes from one numpy Generator drawn in a fixed order and gzip is written with
mtime=0, so the same (seed, n) gives byte-identical files. Values are realistic in shape and
range, not clinically coherent beyond the basics: times nest (ICU stays inside admissions,
charting inside stays, deaths after the last discharge) and every code is in its dictionary.

One planted, learnable signal (for `examples/train_mortality.py` and its test): a patient who
dies in the ICU (the last stay of an admission that ends in death, its outtime set to the
death time: 60 % of deaths) deteriorates over the first 24 h of that stay. Its systolic
pressure falls linearly by `SIGNAL_SBP_DROP` mmHg from ICU admission to admission + 24 h and
stays down (diastolic and mean pressure follow: mean arterial pressure, concepts
`mbp_invasive`/`mbp_noninvasive`, falls ~14 mmHg), and its ICU lactate (labevents 50813,
concept `lactate`) rises linearly from ~1.8 to ~3.5 mmol/L. Every ICU stay gets those
lactates, a blood gas every 4 h over its first 24 h, so survivors' stays have them too, near
1.4 mmol/L with a per-stay spread: only the values carry the signal, not their presence.
The lactates draw from their own random stream, so every other value is the same as without
the signal; `death_rate` (default 0.06, the share of patients whose last admission ends in
death) can be raised for a set with more positives (the example's test uses 0.5).
CLI: python -m trajectory.synth OUT_DIR --patients N --seed S [--death-rate P]
"""
from __future__ import annotations

import argparse
import gzip
import io
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl

DAY, HOUR, MIN = 86400, 3600, 60
# Strong enough that logistic regression on a few hundred stays finds it (held-out AUROC ~0.9
# on 500 patients at death_rate 0.5), weak enough to overlap survivors (per-stay spread).
SIGNAL_SBP_DROP = 20.0  # mmHg of systolic pressure lost over the first 24 h by ICU deaths
SIGNAL_LACTATE = (1.8, 3.5)  # mmol/L at ICU admission and at + 24 h, ICU deaths (median)
SIGNAL_LACTATE_NORMAL = 1.4  # mmol/L, median of everyone else's ICU lactates
SIGNAL_LACTATE_SD = 0.35  # log-scale spread: per stay (survivors) and per draw (everyone)


def _rows(block: str) -> list[list[str]]:
    return [line.split("|") for line in block.strip("\n").splitlines()]


# MIMIC-IV v2.2 column order, exactly (procedureevents' upper-case tail included).
HEADERS = dict(line.split(" ") for line in """\
hosp/patients subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod
hosp/admissions subject_id,hadm_id,admittime,dischtime,deathtime,admission_type,admit_provider_id,admission_location,discharge_location,insurance,language,marital_status,race,edregtime,edouttime,hospital_expire_flag
hosp/transfers subject_id,hadm_id,transfer_id,eventtype,careunit,intime,outtime
hosp/services subject_id,hadm_id,transfertime,prev_service,curr_service
hosp/labevents labevent_id,subject_id,hadm_id,specimen_id,itemid,order_provider_id,charttime,storetime,value,valuenum,valueuom,ref_range_lower,ref_range_upper,flag,priority,comments
hosp/microbiologyevents microevent_id,subject_id,hadm_id,micro_specimen_id,order_provider_id,chartdate,charttime,spec_itemid,spec_type_desc,test_seq,storedate,storetime,test_itemid,test_name,org_itemid,org_name,isolate_num,quantity,ab_itemid,ab_name,dilution_text,dilution_comparison,dilution_value,interpretation,comments
hosp/diagnoses_icd subject_id,hadm_id,seq_num,icd_code,icd_version
hosp/procedures_icd subject_id,hadm_id,seq_num,chartdate,icd_code,icd_version
hosp/hcpcsevents subject_id,hadm_id,chartdate,hcpcs_cd,seq_num,short_description
hosp/drgcodes subject_id,hadm_id,drg_type,drg_code,description,drg_severity,drg_mortality
hosp/prescriptions subject_id,hadm_id,pharmacy_id,poe_id,poe_seq,order_provider_id,starttime,stoptime,drug_type,drug,formulary_drug_cd,gsn,ndc,prod_strength,form_rx,dose_val_rx,dose_unit_rx,form_val_disp,form_unit_disp,doses_per_24_hrs,route
hosp/pharmacy subject_id,hadm_id,pharmacy_id,poe_id,starttime,stoptime,medication,proc_type,status,entertime,verifiedtime,route,frequency,disp_sched,infusion_type,sliding_scale,lockout_interval,basal_rate,one_hr_max,doses_per_24_hrs,duration,duration_interval,expiration_value,expiration_unit,expirationdate,dispensation,fill_quantity
hosp/emar subject_id,hadm_id,emar_id,emar_seq,poe_id,pharmacy_id,enter_provider_id,charttime,medication,event_txt,scheduletime,storetime
hosp/poe poe_id,poe_seq,subject_id,hadm_id,ordertime,order_type,order_subtype,transaction_type,discontinue_of_poe_id,discontinued_by_poe_id,order_provider_id,order_status
hosp/omr subject_id,chartdate,seq_num,result_name,result_value
hosp/emar_detail subject_id,emar_id,emar_seq,parent_field_ordinal,administration_type,pharmacy_id,barcode_type,reason_for_no_barcode,complete_dose_not_given,dose_due,dose_due_unit,dose_given,dose_given_unit,will_remainder_of_dose_be_given,product_amount_given,product_unit,product_code,product_description,product_description_other,prior_infusion_rate,infusion_rate,infusion_rate_adjustment,infusion_rate_adjustment_amount,infusion_rate_unit,route,infusion_complete,completion_interval,new_iv_bag_hung,continued_infusion_in_other_location,restart_interval,side,site,non_formulary_visual_verification
hosp/poe_detail poe_id,poe_seq,subject_id,field_name,field_value
hosp/provider provider_id
hosp/d_labitems itemid,label,fluid,category
hosp/d_icd_diagnoses icd_code,icd_version,long_title
hosp/d_icd_procedures icd_code,icd_version,long_title
hosp/d_hcpcs code,category,long_description,short_description
icu/icustays subject_id,hadm_id,stay_id,first_careunit,last_careunit,intime,outtime,los
icu/chartevents subject_id,hadm_id,stay_id,caregiver_id,charttime,storetime,itemid,value,valuenum,valueuom,warning
icu/datetimeevents subject_id,hadm_id,stay_id,caregiver_id,charttime,storetime,itemid,value,valueuom,warning
icu/inputevents subject_id,hadm_id,stay_id,caregiver_id,starttime,endtime,storetime,itemid,amount,amountuom,rate,rateuom,orderid,linkorderid,ordercategoryname,secondaryordercategoryname,ordercomponenttypedescription,ordercategorydescription,patientweight,totalamount,totalamountuom,isopenbag,continueinnextdept,statusdescription,originalamount,originalrate
icu/ingredientevents subject_id,hadm_id,stay_id,caregiver_id,starttime,endtime,storetime,itemid,amount,amountuom,rate,rateuom,orderid,linkorderid,statusdescription,originalamount,originalrate
icu/outputevents subject_id,hadm_id,stay_id,caregiver_id,charttime,storetime,itemid,value,valueuom
icu/procedureevents subject_id,hadm_id,stay_id,caregiver_id,starttime,endtime,storetime,itemid,value,valueuom,location,locationcategory,orderid,linkorderid,ordercategoryname,ordercategorydescription,patientweight,isopenbag,continueinnextdept,statusdescription,ORIGINALAMOUNT,ORIGINALRATE
icu/d_items itemid,label,abbreviation,linksto,category,unitname,param_type,lownormalvalue,highnormalvalue
icu/caregiver caregiver_id
note/discharge note_id,subject_id,hadm_id,note_type,note_seq,charttime,storetime,text
note/radiology note_id,subject_id,hadm_id,note_type,note_seq,charttime,storetime,text
note/discharge_detail note_id,subject_id,field_name,field_value,field_ordinal
note/radiology_detail note_id,subject_id,field_name,field_value,field_ordinal
""".splitlines())  # noqa: E501

# itemid|label|abbreviation|linksto|category|unitname|param_type, as in MIMIC-IV's d_items
D_ITEMS = _rows("""
220045|Heart Rate|HR|chartevents|Routine Vital Signs|bpm|Numeric
220179|Non Invasive Blood Pressure systolic|NBPs|chartevents|Routine Vital Signs|mmHg|Numeric
220180|Non Invasive Blood Pressure diastolic|NBPd|chartevents|Routine Vital Signs|mmHg|Numeric
220181|Non Invasive Blood Pressure mean|NBPm|chartevents|Routine Vital Signs|mmHg|Numeric
220050|Arterial Blood Pressure systolic|ABPs|chartevents|Routine Vital Signs|mmHg|Numeric
220051|Arterial Blood Pressure diastolic|ABPd|chartevents|Routine Vital Signs|mmHg|Numeric
220052|Arterial Blood Pressure mean|ABPm|chartevents|Routine Vital Signs|mmHg|Numeric
220210|Respiratory Rate|RR|chartevents|Respiratory|insp/min|Numeric
220277|O2 saturation pulseoxymetry|SpO2|chartevents|Respiratory|%|Numeric
223761|Temperature Fahrenheit|Temperature F|chartevents|Routine Vital Signs|°F|Numeric
223762|Temperature Celsius|Temperature C|chartevents|Routine Vital Signs|°C|Numeric
224639|Daily Weight|Daily Weight|chartevents|General|kg|Numeric
226512|Admission Weight (Kg)|Admission Weight (Kg)|chartevents|General|kg|Numeric
226707|Height|Height|chartevents|General|Inch|Numeric
226730|Height (cm)|Height (cm)|chartevents|General|cm|Numeric
223835|Inspired O2 Fraction|FiO2|chartevents|Respiratory|%|Numeric
220739|GCS - Eye Opening|Eye Opening|chartevents|Neurological||Text
223900|GCS - Verbal Response|Verbal Response|chartevents|Neurological||Text
223901|GCS - Motor Response|Motor Response|chartevents|Neurological||Text
220621|Glucose (serum)|Glucose (serum)|chartevents|Labs|mg/dL|Numeric
220048|Heart Rhythm|Heart Rhythm|chartevents|Routine Vital Signs||Text
224650|Ectopy Type 1|Ectopy Type 1|chartevents|Routine Vital Signs||Text
224288|Arterial line Insertion Date|Arterial line Insertion Date|datetimeevents|Access Lines - Invasive||Date and time
224290|Arterial line Tubing Change|Arterial line Tubing Change|datetimeevents|Access Lines - Invasive||Date and time
224280|Multi Lumen Insertion Date|Multi Lumen Insertion Date|datetimeevents|Access Lines - Invasive||Date and time
225754|20 Gauge Insertion Date|20 Gauge Insertion Date|datetimeevents|Access Lines - Peripheral||Date and time
220949|Dextrose 5%|Dextrose 5%|inputevents|Fluids/Intake|mL|Solution
225158|NaCl 0.9%|NaCl 0.9%|inputevents|Fluids/Intake|mL|Solution
225828|LR|LR|inputevents|Fluids/Intake|mL|Solution
221906|Norepinephrine|Norepinephrine|inputevents|Medications|mg|Solution
222168|Propofol|Propofol|inputevents|Medications|mg|Solution
225798|Vancomycin|Vancomycin|inputevents|Antibiotics|dose|Solution
225166|Potassium Chloride|Potassium Chloride - KCL|inputevents|Medications|mEq|Solution
220490|Water|H2O|ingredientevents|Ingredients|mL|Ingredient
226559|Foley|Foley|outputevents|Output|mL|Numeric
226560|Void|Void|outputevents|Output|mL|Numeric
226588|Chest Tube #1|Chest Tube #1|outputevents|Output|mL|Numeric
225459|Chest X-Ray|Chest X-Ray|procedureevents|5-Imaging|None|Processes
225402|EKG|EKG|procedureevents|4-Procedures|None|Processes
225792|Invasive Ventilation|Invasive Ventilation|procedureevents|2-Ventilation|None|Processes
224263|Multi Lumen|Multi Lumen|procedureevents|Access Lines - Invasive|None|Processes
224277|18 Gauge|18 Gauge|procedureevents|Access Lines - Peripheral|None|Processes
""")  # noqa: E501
UNIT = {int(r[0]): r[5] or None for r in D_ITEMS}
# itemid|label|fluid|category|unit|ref low|ref high|median|log-sd|decimals|panel
LABS = _rows("""
50983|Sodium|Blood|Chemistry|mEq/L|133|145|139|0.025|0|chem
50971|Potassium|Blood|Chemistry|mEq/L|3.3|5.1|4.1|0.1|1|chem
50902|Chloride|Blood|Chemistry|mEq/L|96|108|102|0.035|0|chem
50882|Bicarbonate|Blood|Chemistry|mEq/L|22|32|25|0.12|0|chem
51006|Urea Nitrogen|Blood|Chemistry|mg/dL|6|20|18|0.5|0|chem
50912|Creatinine|Blood|Chemistry|mg/dL|0.5|1.2|1.0|0.45|1|chem
50931|Glucose|Blood|Chemistry|mg/dL|70|100|115|0.3|0|chem
51301|White Blood Cells|Blood|Hematology|K/uL|4.0|11.0|8.5|0.4|1|cbc
51222|Hemoglobin|Blood|Hematology|g/dL|13.7|17.5|11|0.18|1|cbc
51221|Hematocrit|Blood|Hematology|%|40|52|33|0.17|1|cbc
51265|Platelet Count|Blood|Hematology|K/uL|150|440|220|0.4|0|cbc
51237|INR(PT)|Blood|Hematology||0.9|1.1|1.2|0.25|1|coag
50885|Bilirubin, Total|Blood|Chemistry|mg/dL|0|1.5|0.7|0.7|1|lft
50820|pH|Blood|Blood Gas|units|7.35|7.45|7.39|0.008|2|bg
50821|pO2|Blood|Blood Gas|mm Hg|85|105|95|0.35|0|bg
50818|pCO2|Blood|Blood Gas|mm Hg|35|45|41|0.15|0|bg
50813|Lactate|Blood|Blood Gas|mmol/L|0.5|2|1.6|0.5|1|bg
""")
# Urinalysis results are text ("NEG", ">100") without valuenum, as in MIMIC-IV.
TEXT_LABS = _rows("""
51484|Ketone|mg/dL|NEG,NEG,TR,10
51466|Blood||NEG,NEG,TR,SM,LG
51492|Protein|mg/dL|NEG,TR,30,>100
51478|Glucose|mg/dL|NEG,NEG,NEG,>1000
""")
PANEL_P = {"chem": 1.0, "cbc": 0.8, "coag": 0.3, "lft": 0.2, "bg": 0.1, "ua": 0.08}
DX = _rows("""
4019|9|Unspecified essential hypertension
2724|9|Other and unspecified hyperlipidemia
42731|9|Atrial fibrillation
4280|9|Congestive heart failure, unspecified
5849|9|Acute kidney failure, unspecified
41401|9|Coronary atherosclerosis of native coronary artery
25000|9|Diabetes mellitus without mention of complication, type II or unspecified type, not stated as uncontrolled
5990|9|Urinary tract infection, site not specified
2859|9|Anemia, unspecified
53081|9|Esophageal reflux
2761|9|Hyposmolality and/or hyponatremia
311|9|Depressive disorder, not elsewhere classified
5853|9|Chronic kidney disease, Stage III (moderate)
3051|9|Tobacco use disorder
27800|9|Obesity, unspecified
I10|10|Essential (primary) hypertension
E785|10|Hyperlipidemia, unspecified
I4891|10|Unspecified atrial fibrillation
N179|10|Acute kidney failure, unspecified
I2510|10|Atherosclerotic heart disease of native coronary artery without angina pectoris
E119|10|Type 2 diabetes mellitus without complications
N390|10|Urinary tract infection, site not specified
D649|10|Anemia, unspecified
K219|10|Gastro-esophageal reflux disease without esophagitis
J449|10|Chronic obstructive pulmonary disease, unspecified
F329|10|Major depressive disorder, single episode, unspecified
E039|10|Hypothyroidism, unspecified
Z66|10|Do not resuscitate
G4733|10|Obstructive sleep apnea (adult) (pediatric)
Z87891|10|Personal history of nicotine dependence
""")  # noqa: E501
PX = _rows("""
3893|9|Venous catheterization, not elsewhere classified
9604|9|Insertion of endotracheal tube
9671|9|Continuous invasive mechanical ventilation for less than 96 consecutive hours
3891|9|Arterial catheterization
3961|9|Extracorporeal circulation auxiliary to open heart surgery
0BH17EZ|10|Insertion of Endotracheal Airway into Trachea, Via Natural or Artificial Opening
5A1945Z|10|Respiratory Ventilation, 24-96 Consecutive Hours
02HV33Z|10|Insertion of Infusion Device into Superior Vena Cava, Percutaneous Approach
B548ZZA|10|Ultrasonography of Superior Vena Cava, Guidance
5A1D70Z|10|Performance of Urinary Filtration, Intermittent, Less than 6 Hours Per Day
""")
HCPCS = _rows("""
G0378||Hospital observation service, per hour|Hospital observation per hr
99291|1||Critical care services
93454|1||Cardiovascular
36556|1||Cardiovascular system
43239|1||Digestive system
J1100||Injection, dexamethasone sodium phosphate, 1 mg|Dexamethasone sodium phos
""")
DRG = _rows("""
HCFA|871|SEPTICEMIA OR SEVERE SEPSIS W/O MV 96+ HOURS W MCC
HCFA|291|HEART FAILURE & SHOCK W MCC
HCFA|683|RENAL FAILURE W CC
HCFA|377|G.I. HEMORRHAGE W MCC
HCFA|864|FEVER
APR|720|SEPTICEMIA & DISSEMINATED INFECTIONS
APR|133|RESPIRATORY FAILURE
APR|194|HEART FAILURE
APR|460|RENAL FAILURE
APR|143|OTHER RESPIRATORY DIAGNOSES EXCEPT SIGNS, SYMPTOMS & MINOR DIAGNOSES
""")
# drug|formulary_drug_cd|gsn|ndc|prod_strength|dose_val_rx|dose_unit_rx|form_val_disp|
# form_unit_disp|doses_per_24_hrs|route|frequency|disp_sched
DRUGS = _rows("""
Furosemide|FURO40|008209|51079007320|40mg Tablet|40|mg|1|TAB|1|PO/NG|DAILY|8
Insulin|INSULIN|027413|0|Dummy Package for Sliding Scale|0|UNIT|0|VIAL||SC|ASDIR|
Acetaminophen|ACET325|004489|00904198261|325mg Tablet|325-650|mg|1-2|TAB|4|PO/NG|Q6H:PRN|
Heparin|HEPA5I|006549|63323026201|5000 Units / mL- 1mL Vial|5000|UNIT|1|mL|3|SC|Q8H|6, 14, 22
Metoprolol Tartrate|METO25|005132|51079025520|25mg Tablet|25|mg|1|TAB|2|PO|BID|8, 20
Sodium Chloride 0.9%  Flush|NACLFLUSH||0|10 mL Syringe|3-10|mL|0.3-1|SYR|3|IV|Q8H|6, 14, 22
Pantoprazole|PANT40|027462|00008084199|40mg Tablet|40|mg|1|TAB|1|PO|Q24H|8
Vancomycin|VANC1F|043952|00338355248|1g Frozen Bag|1000|mg|1|BAG|2|IV|Q12H|8, 20
Docusate Sodium|DOCU100|003009|00904224461|100mg Capsule|100|mg|1|CAP|2|PO|BID|8, 20
Senna|SENN187|019964|00904516561|8.6 mg Tablet|8.6-17.2|mg|1-2|TAB|1|PO|HS|22
Atorvastatin|ATOR40|029970|00378212177|40mg Tablet|40|mg|1|TAB|1|PO/NG|QHS|22
Potassium Chloride|KCL20PM|001322|00074780801|20mEq Packet|40|mEq|2|PKT|1|PO|ONCE|
""")
# itemid|amountuom|rateuom|rate low|rate high|bolus amount|ordercategoryname|secondary|
# ordercategorydescription|totalamount
INPUTS = _rows("""
220949|ml|mL/hour|5|100|0|02-Fluids (Crystalloids)|Additive (Crystalloid)|Continuous IV|250
225158|ml||0|0|500|03-IV Fluid Bolus||Bolus|500
225828|ml|mL/hour|75|150|0|02-Fluids (Crystalloids)||Continuous IV|1000
221906|mg|mcg/kg/min|0.02|0.3|0|01-Drips|02-Fluids (Crystalloids)|Continuous Med|250
222168|mg|mcg/kg/min|10|50|0|01-Drips|02-Fluids (Crystalloids)|Continuous Med|100
225798|dose||0|0|1|08-Antibiotics (IV)|02-Fluids (Crystalloids)|Drug Push|500
225166|mEq|mEq/hour|5|10|0|02-Fluids (Crystalloids)|Additive (Crystalloid)|Continuous IV|100
""")
# spec itemid|spec_type_desc|test itemid|test_name|P(organism)|comment when negative
MICRO = _rows("""
70012|BLOOD CULTURE|90201|Blood Culture, Routine|0.15|NO GROWTH.
70079|URINE|90039|URINE CULTURE|0.5|MIXED BACTERIAL FLORA ( >= 3 COLONY TYPES), CONSISTENT WITH SKIN AND/OR GENITAL CONTAMINATION.
70091|MRSA SCREEN|90189|MRSA SCREEN|0|No MRSA isolated.
70062|SPUTUM|90055|RESPIRATORY CULTURE|0.4|SPARSE GROWTH Commensal Respiratory Flora.
70064|STOOL|90221|C. difficile PCR|0|Negative for toxigenic C. difficile by the Illumigene DNA amplification assay.            (Reference Range-Negative).
""")  # noqa: E501
ORGS = [(80002, "ESCHERICHIA COLI"), (80004, "KLEBSIELLA PNEUMONIAE"),
        (80026, "PSEUDOMONAS AERUGINOSA"), (80023, "STAPH AUREUS COAG +"),
        (80053, "ENTEROCOCCUS SP.")]
ABX = [(90029, "MEROPENEM", 0.25), (90012, "GENTAMICIN", 1), (90019, "CIPROFLOXACIN", 0.25),
       (90026, "PIPERACILLIN/TAZO", 4), (90018, "CEFTRIAXONE", 1),
       (90008, "TRIMETHOPRIM/SULFA", 1), (90005, "CEFAZOLIN", 4)]
ICU_UNITS = ["Medical Intensive Care Unit (MICU)", "Surgical Intensive Care Unit (SICU)",
             "Medical/Surgical Intensive Care Unit (MICU/SICU)",
             "Cardiac Vascular Intensive Care Unit (CVICU)", "Coronary Care Unit (CCU)",
             "Trauma SICU (TSICU)", "Neuro Surgical Intensive Care Unit (Neuro SICU)",
             "Neuro Stepdown", "Neuro Intermediate"]
WARDS = ["Medicine", "Med/Surg", "Neurology", "Medicine/Cardiology", "Transplant",
         "Cardiac Surgery", "Hematology/Oncology", "Vascular", "Med/Surg/Trauma", "PACU",
         "Emergency Department Observation", "Discharge Lounge"]
SERVICES = ["MED", "CMED", "SURG", "OMED", "CSURG", "NSURG", "VSURG", "NMED", "TRAUM", "ORTHO"]
CHIEF = ["Shortness of breath", "Chest pain", "Abdominal pain", "Fever, chills",
         "Altered mental status", "Weakness", "Fall", "Hypotension", "Nausea/vomiting"]
EXAMS = [("CHEST (PORTABLE AP)", "Portable AP chest radiograph.",
          "Lungs are clear, without focal consolidation. No pleural effusion or pneumothorax.\n"
          "Heart size is normal. Mediastinal contours are unremarkable.",
          "No acute cardiopulmonary process."),
         ("CHEST (PA AND LAT)", "Chest PA and lateral.",
          "Mild pulmonary vascular congestion, with small bilateral pleural effusions.\n"
          "Bibasilar opacities likely reflect atelectasis, though infection is not excluded.",
          "Mild pulmonary edema, \"improved\" compared to prior."),
         ("CT HEAD W/O CONTRAST", "Contiguous axial images of the brain without contrast.",
          "There is no evidence of hemorrhage, edema, mass effect, or infarction.\n"
          "The ventricles and sulci are normal in size and configuration.",
          "No acute intracranial abnormality."),
         ("LIVER OR GALLBLADDER US (SINGLE ORGAN)", "Grayscale and color Doppler ultrasound.",
          "The liver is normal in echotexture, without focal lesion. No biliary dilation.\n"
          "The gallbladder contains sludge, without wall thickening or pericholecystic fluid.",
          "Gallbladder sludge, without sonographic evidence of acute cholecystitis.")]


# exam_code and CPT code of each of EXAMS, as radiology_detail gives them
EXAM_CODES = [("CXRP", "71045"), ("CXR", "71046"), ("CTHEAD", "70450"), ("USABD", "76705")]


def _rep(counts):
    return np.repeat(np.arange(len(counts)), counts)


def _cumcount(g):
    """Position of each row within its run of equal labels (g must be grouped)."""
    if len(g) == 0:
        return np.zeros(0, np.int64)
    starts = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
    return np.arange(len(g)) - np.repeat(starts, np.diff(np.r_[starts, len(g)]))


def _ids(rng, base, span, k):
    """k distinct ids in [base, base + span), in random order (sorted random gaps, shuffled)."""
    return rng.permutation(base + np.cumsum(rng.integers(1, max(2, span // max(k, 1)), k)))


def _null(s, null):
    return s if null is None else s.scatter(np.flatnonzero(null), None)


def _ts(sec, null=None):
    return _null(pl.Series(np.asarray(sec, np.int64) * 1000).cast(pl.Datetime("ms")), null)


def _date(sec, null=None):
    days = (np.asarray(sec, np.int64) // DAY).astype(np.int32)
    return _null(pl.Series(days).cast(pl.Date), null)


def _num(a, null=None):
    return _null(pl.Series(a), null)


def _voc(vocab, idx):
    return pl.Series([v or None for v in vocab], dtype=pl.String).gather(np.asarray(idx))


def _text_num(v, dec0):
    """MIMIC's text `value` of a number: "88" for whole-number items, "7.35" otherwise."""
    v = pl.Series(v)
    return pl.select(pl.when(pl.Series(dec0)).then(v.round(0).cast(pl.Int64).cast(pl.String))
                     .otherwise(v.cast(pl.String))).to_series()


def _join(*parts):
    out = pl.Series(parts[0]).cast(pl.String)
    for p in parts[1:]:
        out = out + "-" + (pl.Series(p).cast(pl.String) if not isinstance(p, str) else p)
    return out


def _gzip_write(path, data):
    with open(path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", compresslevel=1, mtime=0,
                                               filename="") as gz:
        gz.write(data)


class _Synth:
    def __init__(self, out, n, seed, pool, death_rate=0.06):
        self.out, self.n, self.pool, self.jobs = Path(out), n, pool, []
        self.r = r = np.random.default_rng(seed)
        self.death_rate = float(death_rate)
        # the planted signal's own stream: the main stream's draws stay as they were
        self.signal_rng = np.random.default_rng([int(seed), 13])
        # the detail and id-list tables' own stream, for the same reason
        self.detail_rng = np.random.default_rng([int(seed), 17])
        chars = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
        self.providers = ["P" + "".join(c) for c in chars[r.integers(0, 36, (500, 5))]]

    def u(self, lo, hi, n):
        return self.r.uniform(lo, hi, n)

    def pick(self, k, n, p=None):
        return self.r.choice(k, n, p=p)

    def prov(self, n, p_null):
        """Provider ids (P + 5 characters), null with probability p_null."""
        r = self.r
        return _voc(self.providers + [None], np.where(r.random(n) < p_null, 500,
                                                      r.integers(0, 500, n)))

    def during(self, rows, lo=0.0, hi=1.0):
        """A time inside each row's admission, at a uniform fraction in [lo, hi) of its stay."""
        los = self.disch[rows] - self.admit[rows]
        return self.admit[rows] + (los * self.u(lo, hi, len(rows))).astype(np.int64)

    def emit(self, table, cols):
        """Write one table; columns missing from `cols` are empty, scalars are broadcast."""
        names = HEADERS[table].split(",")
        assert set(cols) <= set(names), set(cols) - set(names)
        n = next(len(v) for v in cols.values() if isinstance(v, (pl.Series, np.ndarray)))
        series = [pl.Series(c, cols[c]) if isinstance(cols.get(c), (pl.Series, np.ndarray))
                  else pl.repeat(cols.get(c), n, eager=True, dtype=None if isinstance(
                      cols.get(c), int) else pl.String).alias(c) for c in names]
        buf = io.BytesIO()
        pl.DataFrame(series).write_csv(buf, datetime_format="%Y-%m-%d %H:%M:%S",
                                       date_format="%Y-%m-%d")
        path = self.out / f"{table}.csv.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.jobs.append(self.pool.submit(_gzip_write, path, buf.getvalue()))

    def ids(self, adm):
        return {"subject_id": self.sid[self.P[adm]], "hadm_id": self.hadm[adm]}

    def stay_ids(self, stays):
        return {**self.ids(self.sa[stays]), "stay_id": self.stay_id[stays],
                "caregiver_id": self.r.integers(100, 99999, len(stays))}

    # ---------------------------------------------------------------- patients, admissions
    def admissions(self):
        r, n = self.r, self.n
        self.sid = 10_000_000 + np.cumsum(r.integers(1, max(2, min(1000, 9_000_000 // n)), n))
        self.female = r.random(n) < 0.52
        age, ayear = r.integers(18, 92, n), r.integers(2110, 2201, n)
        self.agroup = self.pick(4, n)  # also the patient's ICD era (older groups: ICD-9)
        self.height = np.where(self.female, 162, 176) + r.normal(0, 7, n)
        self.weight = np.clip(r.normal(np.where(self.female, 72, 86), 16), 40, 180)
        na = self.pick(4, n, [.45, .3, .15, .1]) + 1
        self.P = P = _rep(na)
        self.A = A = len(P)
        k = _cumcount(P)
        los = (np.clip(r.lognormal(np.log(4), 0.7, A), 1, 20) * DAY).astype(np.int64) // MIN * MIN
        gap = (np.where(k == 0, self.u(0, 730, A), 7 + r.exponential(180, A)) * DAY)
        seg = gap.astype(np.int64) + los
        before = np.cumsum(seg) - seg  # admissions follow each other, a gap apart
        year0 = (ayear - 1970).astype("datetime64[Y]").astype("datetime64[s]").astype(np.int64)
        self.admit = (year0[P] + before - np.repeat(before[k == 0], na) + gap.astype(np.int64)
                      ) // MIN * MIN
        self.disch = self.admit + los
        self.first_admit = self.admit[k == 0]
        self.age_adm = age[P] + (self.admit - year0[P]) // (365 * DAY)
        last = np.r_[P[1:] != P[:-1], True]
        self.died = last & (r.random(A) < self.death_rate)
        later = np.where(r.random(n) < 0.15, self.disch[last] + r.integers(1, 365, n) * DAY, -1)
        dod = np.where(self.died[last], self.disch[last], later)
        self.emit("hosp/patients", {
            "subject_id": self.sid, "gender": _voc("MF", self.female.astype(int)),
            "anchor_age": age, "anchor_year": ayear, "anchor_year_group": _voc(
                ["2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019"], self.agroup),
            "dod": _date(dod, dod < 0)})
        self.hadm = _ids(r, 20_000_000, 10_000_000, A)
        self.has_ed = r.random(A) < 0.5
        self.edreg = self.admit - r.integers(60, 600, A) * MIN
        self.edout = self.admit + r.integers(0, 180, A) * MIN
        types = ["EW EMER.", "EU OBSERVATION", "OBSERVATION ADMIT", "URGENT", "ELECTIVE",
                 "SURGICAL SAME DAY ADMISSION", "DIRECT EMER.", "DIRECT OBSERVATION"]
        atype = np.where(self.has_ed, self.pick(4, A, [.6, .15, .15, .1]), 3 + self.pick(5, A))
        locs = ["EMERGENCY ROOM", "PHYSICIAN REFERRAL", "TRANSFER FROM HOSPITAL",
                "CLINIC REFERRAL", "PROCEDURE SITE", "WALK-IN/SELF REFERRAL"]
        dlocs = ["HOME", "HOME HEALTH CARE", "SKILLED NURSING FACILITY", "REHAB",
                 "CHRONIC/LONG TERM ACUTE CARE", "HOSPICE", "AGAINST ADVICE", None, "DIED"]
        self.dloc = np.where(self.died, 8, self.pick(8, A, [.4, .25, .15, .06, .04, .03, .02,
                                                           .05]))
        per_patient = [(["Medicare", "Medicaid", "Other"], None), (["ENGLISH", "?"], [.9, .1]),
                       (["MARRIED", "SINGLE", "WIDOWED", "DIVORCED", None], [.4, .3, .12, .1, .08]),
                       (["WHITE", "BLACK/AFRICAN AMERICAN", "HISPANIC/LATINO - PUERTO RICAN",
                         "ASIAN - CHINESE", "OTHER", "UNKNOWN"], [.6, .15, .07, .05, .06, .07])]
        insurance, language, marital, race = (_voc(v, self.pick(len(v), n, p)[P])
                                              for v, p in per_patient)
        self.emit("hosp/admissions", {
            **self.ids(np.arange(A)), "admittime": _ts(self.admit),
            "dischtime": _ts(self.disch), "deathtime": _ts(self.disch, ~self.died),
            "admission_type": _voc(types, atype), "admit_provider_id": self.prov(A, 0.02),
            "admission_location": _voc(locs, np.where(self.has_ed, 0, 1 + self.pick(5, A))),
            "discharge_location": _voc(dlocs, self.dloc), "insurance": insurance,
            "language": language, "marital_status": marital, "race": race,
            "edregtime": _ts(self.edreg, ~self.has_ed), "edouttime": _ts(self.edout, ~self.has_ed),
            "hospital_expire_flag": self.died.astype(np.int64)})

    # ---------------------------------------------------------------- ADT: transfers, stays
    def adt(self):
        r, A = self.r, self.A
        t0 = np.where(self.has_ed, self.edout, self.admit)  # ward/ICU care starts after the ED
        nicu = self.pick(3, A, [.4, .5, .1])
        self.sa = sa = _rep(nicu)
        S = len(sa)
        sk = _cumcount(sa)
        width = (self.disch - t0)[sa] / nicu[sa]  # stay k lies in the k-th slice of the admission
        a = np.where((sk == 0) & (r.random(S) < 0.4), 0.0, self.u(0, 0.35, S))
        sin = (t0[sa] + width * (sk + a)).astype(np.int64)
        sout = (sin + width * (1 - a) * self.u(0.35, 0.95, S)).astype(np.int64)
        last = np.r_[sa[1:] != sa[:-1], True] if S else np.zeros(0, bool)
        self.dies_in_icu = last & self.died[sa] & (r.random(S) < 0.6)  # death at outtime
        sout = np.where(self.dies_in_icu, self.disch[sa], sout)
        nu = len(ICU_UNITS)
        first_u = self.pick(nu, S, [.22, .2, .17, .17, .1, .1, .02, .01, .01])
        split = r.random(S) < 0.12  # moved to another unit mid-stay
        last_u = np.where(split, (first_u + r.integers(1, nu, S)) % nu, first_u)
        mid = (sin + sout) // 2
        prev_end = np.where(sk == 0, t0[sa], np.r_[0, sout[:-1]])
        tail = t0.copy()
        tail[sa[last]] = sout[last]
        ed, wb, wt = np.flatnonzero(self.has_ed), sin - prev_end >= MIN, self.disch - tail >= MIN
        wards = lambda m: 2 + nu + self.pick(len(WARDS), m)  # noqa: E731
        none = lambda m: np.full(m, -1)  # noqa: E731
        segs = [  # (admission, order, intime, outtime, unit, stay)
            (ed, 0 * ed, self.edreg[ed], self.edout[ed], 0 * ed, none(len(ed))),
            (sa[wb], 1 + 3 * sk[wb], prev_end[wb], sin[wb], wards(wb.sum()), none(wb.sum())),
            (sa, 2 + 3 * sk, sin, np.where(split, mid, sout), 2 + first_u, np.arange(S)),
            (sa[split], 3 + 3 * sk[split], mid[split], sout[split], 2 + last_u[split],
             none(split.sum())),
            (np.flatnonzero(wt), np.full(wt.sum(), 20), tail[wt], self.disch[wt], wards(wt.sum()),
             none(wt.sum())),
            (np.arange(A), np.full(A, 21), self.disch, none(A), np.ones(A, int), none(A))]
        cols = [np.concatenate(c) for c in zip(*segs)]
        o = np.lexsort((cols[1], cols[0]))
        adm, order, tin, tout, unit, stay = (c[o] for c in cols)
        care = np.flatnonzero((order > 0) & (order < 21))
        etype = np.where(order == 0, 0, np.where(order == 21, 3, 2))
        etype[care[np.r_[True, adm[care][1:] != adm[care][:-1]]]] = 1  # first unit: "admit"
        tid = _ids(r, 30_000_000, 10_000_000, len(adm))
        self.stay_id = np.zeros(S, np.int64)
        self.stay_id[stay[stay >= 0]] = tid[stay >= 0]  # MIMIC's stay_id is a transfer_id
        self.emit("hosp/transfers", {
            **self.ids(adm), "transfer_id": tid,
            "eventtype": _voc(["ED", "admit", "transfer", "discharge"], etype),
            "careunit": _voc(["Emergency Department", None] + ICU_UNITS + WARDS, unit),
            "intime": _ts(tin), "outtime": _ts(tout, tout < 0)})
        self.sin, self.sout, self.S = sin, sout, S
        self.sin_m = (sin + MIN - 1) // MIN * MIN  # stays are to the second, charting to the min
        stays = self.stay_ids(np.arange(S))
        del stays["caregiver_id"]
        self.emit("icu/icustays", {
            **stays, "first_careunit": _voc(ICU_UNITS, first_u),
            "last_careunit": _voc(ICU_UNITS, last_u), "intime": _ts(sin), "outtime": _ts(sout),
            "los": (sout - sin) / DAY})
        self.adm_unit = np.full(A, -1)
        self.adm_unit[sa[::-1]] = first_u[::-1]  # the admission's first ICU, for notes
        # Services: the admitting service and, for a quarter, a later change of service.
        sv = _rep(1 + (r.random(A) < 0.25))
        j = _cumcount(sv)
        self.service = self.pick(len(SERVICES), A)
        other = (self.service + r.integers(1, len(SERVICES), A)) % len(SERVICES)
        self.emit("hosp/services", {
            **self.ids(sv), "transfertime": _ts(np.where(j == 0, self.admit[sv],
                                                         self.during(sv, .2, .8))),
            "prev_service": _voc(SERVICES + [None], np.where(j == 0, -1, self.service[sv])),
            "curr_service": _voc(SERVICES, np.where(j == 0, self.service[sv], other[sv]))})

    # ---------------------------------------------------------------- ICU event tables
    def chart(self):
        r, S = self.r, self.S
        ts = _rep(np.maximum((self.sout - self.sin) // HOUR, 1))  # a charting round an hour
        k = _cumcount(ts)
        T = len(ts)
        tt = self.sin_m[ts] + k * HOUR + r.integers(0, 10, T) * MIN
        self.art, self.vent, self.cvc = (r.random(S) < p for p in (0.35, 0.35, 0.3))
        self.stay_w = np.round(np.clip(self.weight[self.P[self.sa]] + r.normal(0, 2, S), 40, 180),
                               1)
        num, txt = [], []

        def add(itemid, sel, v, dec=0):
            idx = np.flatnonzero(sel)
            num.append((idx, itemid, np.round(v[idx], dec), dec == 0))

        def walk(mean, s_stay, s_tick, lo, hi):  # a per-stay level plus hourly noise
            return np.clip(r.normal(mean, s_stay, S)[ts] + r.normal(0, s_tick, T), lo, hi)

        every = lambda h, phase=0: k % h == phase  # noqa: E731
        for itemid, args in ((220045, (85, 10, 6, 60, 120)), (220210, (18, 3, 3, 10, 35)),
                             (220277, (96, 1.5, 1.5, 88, 100))):
            add(itemid, np.ones(T, bool), walk(*args))
        sbp = walk(120, 14, 10, 80, 190)
        # planted signal (module docstring): ICU deaths lose pressure over the first 24 h
        sbp = sbp - SIGNAL_SBP_DROP * self.dies_in_icu[ts] * np.minimum(
            (tt - self.sin_m[ts]) / (24 * HOUR), 1.0)
        dbp = np.clip(sbp * 0.55 + r.normal(0, 6, T), 40, 110)
        art = self.art[ts]  # arterial lines replace hourly cuff pressures
        for ids, sel in (((220179, 220180, 220181), ~art | every(4)),
                         ((220050, 220051, 220052), art)):
            for itemid, v in zip(ids, (sbp, dbp, (sbp + 2 * dbp) / 3)):
                add(itemid, sel, v)
        temp = walk(98.6, 0.7, 0.5, 96, 103)
        celsius = r.random(T) < 0.2
        add(223761, every(4) & ~celsius, temp, 1)
        add(223762, every(4) & celsius, (temp - 32) / 1.8, 1)
        for itemid, top in ((220739, 4), (223900, 5), (223901, 6)):
            add(itemid, every(4), walk(top - 0.5, 1, 0.5, 1, top))
        add(220621, every(6, 2), walk(140, 30, 20, 60, 300))
        add(223835, every(4, 1) & self.vent[ts], walk(45, 10, 5, 21, 100))
        add(226512, k == 0, self.stay_w[ts], 1)
        add(224639, every(24, 12), np.maximum(self.stay_w[ts] + r.normal(0, 1.5, T), 40), 1)
        height = self.height[self.P[self.sa]][ts]
        add(226730, k == 0, height)
        add(226707, k == 0, height / 2.54)
        for itemid, vocab, p in (
                (220048, ["SR (Sinus Rhythm)", "ST (Sinus Tachycardia)", "AF (Atrial Fibrillation)",
                          "SB (Sinus Bradycardia)"], [.6, .2, .12, .08]),
                (224650, ["None", "PVC's", "PAC's"], [.8, .15, .05])):
            idx = np.flatnonzero(every(4))
            txt.append((idx, itemid, _voc(vocab, self.pick(len(vocab), len(idx), p))))
        parts = num + txt
        rows, sizes = np.concatenate([p[0] for p in parts]), [len(p[0]) for p in parts]
        vn = np.concatenate([p[2] for p in num])
        t = tt[rows]
        self.emit("icu/chartevents", {
            **self.stay_ids(ts[rows]), "charttime": _ts(t),
            "storetime": _ts(t + r.integers(0, 45, len(t)) * MIN),
            "itemid": np.repeat([p[1] for p in parts], sizes),
            "value": pl.concat([_text_num(vn, np.repeat([p[3] for p in num], sizes[:len(num)]))]
                               + [p[2] for p in txt]),
            "valuenum": pl.concat([pl.Series(vn), pl.repeat(None, len(t) - len(vn),
                                                            dtype=pl.Float64, eager=True)]),
            "valueuom": _voc([UNIT[p[1]] for p in parts], _rep(sizes)), "warning": 0})

    def icu_events(self):
        r, S, sin, dur = self.r, self.S, self.sin_m, self.sout - self.sin_m
        # Outputs every 2 h: Foley for catheterised stays, voids (4-hourly) otherwise.
        os_ = _rep(np.maximum(dur // (2 * HOUR), 1))
        ok = _cumcount(os_)
        foley = (r.random(S) < 0.7)[os_]
        tube = (r.random(S) < 0.1)[os_] & (ok % 2 == 1)
        keep = np.r_[np.flatnonzero(foley | (ok % 2 == 0)), np.flatnonzero(tube)]
        item = np.where(foley, 0, 1)[keep]
        item[len(keep) - tube.sum():] = 2
        ot = sin[os_][keep] + ok[keep] * 2 * HOUR + r.integers(1, 60, len(keep)) * MIN
        self.emit("icu/outputevents", {
            **self.stay_ids(os_[keep]), "charttime": _ts(ot),
            "storetime": _ts(ot + r.integers(-20, 30, len(keep)) * MIN),
            "itemid": np.array([226559, 226560, 226588])[item], "valueuom": "ml",
            "value": np.choose(item, [r.integers(lo, hi, len(keep))
                                      for lo, hi in ((20, 300), (100, 600), (10, 200))])})
        # Line dates: the day a line went in, charted during the stay.
        specs = [(224288, self.art), (224290, self.art & (dur > 3 * DAY)), (224280, self.cvc),
                 (225754, r.random(S) < 0.5)]
        st = np.concatenate([np.flatnonzero(m) for _, m in specs])
        dt = sin[st] + (dur[st] * self.u(0, 0.9, len(st))).astype(np.int64) // MIN * MIN + MIN
        self.emit("icu/datetimeevents", {
            **self.stay_ids(st), "charttime": _ts(dt),
            "storetime": _ts(dt + r.integers(0, 30, len(st)) * MIN),
            "itemid": np.repeat([i for i, _ in specs], [m.sum() for _, m in specs]),
            "value": _ts((dt - r.integers(0, 3, len(st)) * DAY) // DAY * DAY),
            "valueuom": "Date", "warning": 0})
        # Procedures: tasks (1 minute) and continuous processes (duration in minutes).
        specs = [(225459, r.random(S) < 0.6, "Imaging", [None], None),
                 (225402, r.random(S) < 0.4, "Procedures", [None], None),
                 (225792, self.vent, "Ventilation", [None], None),
                 (224263, self.cvc, "Invasive Lines", ["Left IJ", "Right IJ", "Right Subclavian"],
                  "Invasive Venous"),
                 (224277, r.random(S) < 0.5, "Peripheral Lines",
                  ["Left Antecubital", "Right Forearm", "Left Hand", None], "Peripheral")]
        st = np.concatenate([np.flatnonzero(s[1]) for s in specs])
        sp = _rep([s[1].sum() for s in specs])
        m = len(st)
        cont = sp >= 2
        start = sin[st] + (dur[st] * np.where(cont, self.u(0, .15, m), self.u(0, .95, m))
                           ).astype(np.int64) // MIN * MIN + MIN
        end = np.where(cont, start + ((self.sout[st] - start) * self.u(.4, .95, m)
                                      ).astype(np.int64) // MIN * MIN, start + MIN)
        minutes = np.where(cont, (end - start) // MIN, 1)
        loc = pl.concat([_voc(s[3], self.pick(len(s[3]), s[1].sum())) for s in specs])
        oid = _ids(r, 1, 9_999_999, m)
        self.emit("icu/procedureevents", {
            **self.stay_ids(st), "starttime": _ts(start), "endtime": _ts(end),
            "storetime": _ts(end + r.integers(0, 60, m) * MIN),
            "itemid": np.array([s[0] for s in specs])[sp], "value": minutes,
            "valueuom": _voc(["None", "min"], cont.astype(int)), "location": loc,
            "locationcategory": _voc([s[4] for s in specs], sp), "orderid": oid,
            "linkorderid": oid, "ordercategoryname": _voc([s[2] for s in specs], sp),
            "ordercategorydescription": _voc(["Task", "ContinuousProcess"], cont.astype(int)),
            "patientweight": self.stay_w[st], "isopenbag": cont.astype(np.int64),
            "continueinnextdept": 0, "statusdescription": "FinishedRunning",
            "ORIGINALAMOUNT": minutes, "ORIGINALRATE": cont.astype(np.int64)})
        self.inputs(dur)

    def inputs(self, dur):
        r, S = self.r, self.S
        spec = list(zip(*INPUTS))
        col = lambda i: np.array(spec[i])[it]  # noqa: E731
        st = _rep(r.integers(2, 9, S))
        m = len(st)
        it = self.pick(len(INPUTS), m, [.2, .2, .15, .12, .1, .13, .1])
        cont = col(2) != ""
        start = self.sin_m[st] + (dur[st] * self.u(0, .8, m)).astype(np.int64) // MIN * MIN + MIN
        span = np.where(cont, self.u(1, 12, m) * HOUR, self.u(1, 30, m) * MIN).astype(np.int64)
        end = np.minimum(start + span // MIN * MIN, self.sout[st] // MIN * MIN)
        hours = (end - start) / HOUR
        lo, hi = col(3).astype(float), col(4).astype(float)
        rate = np.round(lo + (hi - lo) * r.random(m), 3)
        per_kg = col(2) == "mcg/kg/min"
        amount = np.round(np.where(cont, np.where(per_kg, rate * self.stay_w[st] * hours * 0.06,
                                                  rate * hours), col(5).astype(float)), 3)
        oid = _ids(r, 1, 9_999_999, m)
        common = {**self.stay_ids(st), "starttime": _ts(start), "endtime": _ts(end),
                  "storetime": _ts(end + r.integers(-30, 30, m) * MIN), "orderid": oid,
                  "linkorderid": oid, "statusdescription": "FinishedRunning"}
        self.emit("icu/inputevents", {
            **common, "itemid": col(0).astype(np.int64), "amount": amount,
            "amountuom": _voc(spec[1], it), "rate": _num(rate, ~cont),
            "rateuom": _voc(spec[2], it), "ordercategoryname": _voc(spec[6], it),
            "secondaryordercategoryname": _voc(spec[7], it),
            "ordercomponenttypedescription": "Main order parameter",
            "ordercategorydescription": _voc(spec[8], it), "patientweight": self.stay_w[st],
            "totalamount": col(9).astype(np.int64), "totalamountuom": "ml", "isopenbag": 0,
            "continueinnextdept": 0, "originalamount": amount,
            "originalrate": np.where(cont, rate, 0)})
        # Each order's carrier volume is its "Water" ingredient, as MIMIC-IV splits it.
        water = np.round(np.where(col(1) == "ml", amount,
                                  np.where(cont, hours * self.u(5, 20, m), 100)), 3)
        wrate = np.round(water / np.maximum(hours, 1 / 60), 3)
        self.emit("icu/ingredientevents", {
            **common, "itemid": 220490, "amount": water, "amountuom": "ml",
            "rate": _num(wrate, ~cont), "rateuom": _voc([None, "mL/hour"], cont.astype(int)),
            "originalamount": 0, "originalrate": np.where(cont, wrate, 0)})

    # ---------------------------------------------------------------- hosp measurements
    def labs(self):
        r, A, n = self.r, self.A, self.n
        da = _rep(-(-(self.disch - self.admit) // DAY))  # a morning draw per hospital day...
        dk = _cumcount(da)
        dt = self.admit[da] + dk * DAY + r.integers(30, 240, len(da)) * MIN
        ok = dt < self.disch[da]
        da, dk, dt = da[ok], dk[ok], dt[ok]
        op = _rep(r.integers(0, 4, n))  # ...plus outpatient draws before the first admission
        ot = self.first_admit[op] - r.integers(5, 400, len(op)) * DAY + r.integers(
            420, 720, len(op)) * MIN
        adm, pat, t = np.r_[da, np.full(len(op), -1)], np.r_[self.P[da], op], np.r_[dt, ot]
        first = np.r_[dk == 0, np.zeros(len(op), bool)] & (adm >= 0)
        D = len(t)
        panels = {p: r.random(D) < q for p, q in PANEL_P.items()}
        panels["bg"] |= np.r_[self.adm_unit[da] >= 0, np.zeros(len(op), bool)] & (
            r.random(D) < 0.3)
        panels["ua"] &= adm >= 0
        spec = _ids(r, 1_000_000, 98_000_000, D * len(PANEL_P)).reshape(D, -1)
        level = r.normal(0, 1, (A + n, len(LABS)))  # shared within an admission (or outpatient)
        group = np.where(adm >= 0, adm, A + pat)
        draws, vals = [], []
        self.first_labs = {}
        for j, (itemid, *_, med, sd, dec, panel) in enumerate(LABS):
            d = np.flatnonzero(panels[panel])
            z = 0.8 * level[group[d], j] + 0.6 * r.normal(0, 1, len(d))
            vals.append(np.round(float(med) * np.exp(float(sd) * z), int(dec)))
            draws.append(d)
            self.first_labs[int(itemid)] = np.full(A, np.nan)
            self.first_labs[int(itemid)][adm[d][first[d]]] = vals[-1][first[d]]
        ua = np.flatnonzero(panels["ua"])
        tvals = [self.pick(len(x[3].split(",")), len(ua)) for x in TEXT_LABS]
        sizes = [len(d) for d in draws] + [len(ua)] * len(TEXT_LABS)
        it = _rep(sizes)
        d = np.concatenate(draws + [ua] * len(TEXT_LABS))
        v = np.concatenate(vals)
        lo, hi = (np.array([float(x[i]) for x in LABS])[it[:len(v)]] for i in (5, 6))
        text = pl.concat([_voc(x[3].split(","), i) for x, i in zip(TEXT_LABS, tvals)])
        flag = np.r_[(v < lo) | (v > hi), text.to_numpy() != "NEG"]
        N, nt = len(d), len(d) - len(v)
        fnull = pl.repeat(None, nt, dtype=pl.Float64, eager=True)
        hem = np.r_[(it[:len(v)] == 1) & (r.random(len(v)) < 0.03), np.zeros(nt, bool)]
        panel_of = [list(PANEL_P).index(x[10]) for x in LABS] + [5] * len(TEXT_LABS)
        o = np.lexsort((it, d))  # a draw's rows together, as MIMIC orders by labevent_id
        cols = {
            "subject_id": self.sid[pat[d]],
            "hadm_id": _num(self.hadm[np.maximum(adm[d], 0)], adm[d] < 0),
            "specimen_id": spec[d, np.array(panel_of)[it]],
            "itemid": np.array([int(x[0]) for x in LABS + TEXT_LABS])[it],
            "order_provider_id": self.prov(D, 0.7).gather(d), "charttime": _ts(t[d]),
            "storetime": _ts(t[d] + r.integers(20, 180, N) * MIN),
            "value": pl.concat([_text_num(v, np.array([x[9] == "0" for x in LABS])[
                it[:len(v)]]), text]),
            "valuenum": pl.concat([pl.Series(v), fnull]),
            "valueuom": _voc([x[4] for x in LABS] + [x[2] for x in TEXT_LABS], it),
            "ref_range_lower": pl.concat([pl.Series(lo), fnull]),
            "ref_range_upper": pl.concat([pl.Series(hi), fnull]),
            "flag": _voc([None, "abnormal"], flag.astype(int)),
            "priority": _voc(["ROUTINE", "STAT", None], self.pick(3, D, [.6, .3, .1])).gather(d),
            "comments": _voc([None, "HEMOLYSIS FALSELY ELEVATES K."], hem.astype(int))}
        cols = {c: pl.Series(s[o]) if isinstance(s, np.ndarray) else s[o]
                for c, s in cols.items()}
        extra = self.icu_lactate()
        cols = {c: pl.concat([s, extra[c].cast(s.dtype)]) for c, s in cols.items()}
        self.emit("hosp/labevents", {"labevent_id": np.arange(1, len(cols["itemid"]) + 1),
                                     **cols})

    def icu_lactate(self) -> dict:
        """The planted signal's lactates (module docstring): a blood gas every 4 h over the
        first 24 h of every ICU stay, rising for ICU deaths; drawn from `signal_rng`."""
        g, S = self.signal_rng, self.S
        st = np.repeat(np.arange(S), 6)
        h = np.tile(np.arange(0, 24, 4), S)
        t = self.sin_m[st] + h * HOUR + g.integers(5, 50, len(st)) * MIN
        ok = t < self.sout[st]
        st, h, t = st[ok], h[ok], t[ok]
        lo, hi = SIGNAL_LACTATE
        level = SIGNAL_LACTATE_NORMAL * np.exp(SIGNAL_LACTATE_SD * g.normal(0, 1, S))
        med = np.where(self.dies_in_icu[st], lo + (hi - lo) * h / 24, level[st])
        v = np.round(med * np.exp(SIGNAL_LACTATE_SD * g.normal(0, 1, len(st))), 1)
        n = len(st)
        adm = self.sa[st]
        return {"subject_id": pl.Series(self.sid[self.P[adm]]),
                "hadm_id": pl.Series(self.hadm[adm]),
                "specimen_id": pl.Series(100_000_000 + np.arange(n)),
                "itemid": pl.Series(np.full(n, 50813)),
                "order_provider_id": pl.Series([None] * n, dtype=pl.String),
                "charttime": _ts(t), "storetime": _ts(t + 20 * MIN),
                "value": pl.Series(v).cast(pl.String), "valuenum": pl.Series(v),
                "valueuom": pl.Series(["mmol/L"] * n),
                "ref_range_lower": pl.Series(np.full(n, 0.5)),
                "ref_range_upper": pl.Series(np.full(n, 2.0)),
                "flag": _voc([None, "abnormal"], (v > 2.0).astype(int)),
                "priority": pl.Series(["STAT"] * n),
                "comments": pl.Series([None] * n, dtype=pl.String)}

    def micro(self):
        r, A = self.r, self.A
        ma = _rep(self.pick(4, A, [.4, .3, .2, .1]))
        M = len(ma)
        tt = list(zip(*MICRO))
        ti = self.pick(len(MICRO), M, [.35, .3, .15, .12, .08])
        has_org = r.random(M) < np.array(tt[4], float)[ti]
        # A positive culture: the organism's row, then one row per antibiotic tested.
        sp = _rep(np.where(has_org, 1 + r.integers(3, len(ABX) + 1, M), 1))
        j = _cumcount(sp)
        R = len(sp)
        t = self.during(ma, 0, 0.9) // MIN * MIN
        day = t // DAY * DAY
        stored = day + r.integers(1, 4, M) * DAY
        org = self.pick(len(ORGS), M)[sp]
        ab, no_ab, no_org = np.maximum(j - 1, 0), j == 0, ~has_org[sp]
        interp = np.where(no_ab, 3, self.pick(3, R, [.8, .15, .05]))
        dil = np.where(interp == 0, np.array([a[2] for a in ABX])[ab],
                       np.where(interp == 1, 16, 8)).astype(float)
        dtext = pl.Series(np.array(["<=", "=>", "", ""])[interp]) + pl.Series(dil).cast(
            pl.String).str.replace(r"\.0$", "")
        cmt = np.where(no_org, ti[sp], 5)  # negative cultures carry only a comment
        cmt = np.where((cmt == 1) & (r.random(M) < 0.5)[sp], 0, cmt)  # "NO GROWTH." urines
        self.emit("hosp/microbiologyevents", {
            "microevent_id": np.arange(1, R + 1), **self.ids(ma[sp]),
            "micro_specimen_id": _ids(r, 1_000_000, 8_000_000, M)[sp],
            "order_provider_id": self.prov(M, 0.6).gather(sp), "chartdate": _ts(day[sp]),
            "charttime": _ts(t[sp], (r.random(M) < 0.1)[sp]),
            "spec_itemid": np.array(tt[0], np.int64)[ti][sp], "spec_type_desc": _voc(tt[1], ti[sp]),
            "test_seq": 1, "storedate": _ts(stored[sp]),
            "storetime": _ts(stored[sp] + r.integers(360, 1080, M)[sp] * MIN),
            "test_itemid": np.array(tt[2], np.int64)[ti][sp], "test_name": _voc(tt[3], ti[sp]),
            "org_itemid": _num(np.array([o[0] for o in ORGS])[org], no_org),
            "org_name": _voc([o[1] for o in ORGS] + [None], np.where(no_org, -1, org)),
            "isolate_num": _num(np.ones(R, np.int64), no_org),
            "quantity": _voc([None, ">100,000 CFU/mL"], (~no_org & (ti[sp] == 1)).astype(int)),
            "ab_itemid": _num(np.array([a[0] for a in ABX])[ab], no_ab),
            "ab_name": _voc([a[1] for a in ABX] + [None], np.where(no_ab, -1, ab)),
            "dilution_text": _null(dtext, no_ab), "dilution_comparison": _voc(
                ["<=        ", "=>        ", "=         ", None], interp),
            "dilution_value": _num(dil, no_ab), "interpretation": _voc(["S", "R", "I", None],
                                                                       interp),
            "comments": _voc(list(tt[5]) + [None], cmt)})

    # ---------------------------------------------------------------- billing codes
    def _codes(self, table, k, v10):
        """Per admission, k distinct codes of its ICD version (k <= codes of that version)."""
        ver10 = np.array([c[1] == "10" for c in table])
        order = np.argsort(self.r.random((self.A, len(table))) + (ver10 != v10[:, None]), axis=1)
        rows = _rep(k)
        j = _cumcount(rows)
        code = order[rows, j]
        return rows, j, code, order, {"icd_code": _voc([c[0] for c in table], code),
                                      "icd_version": np.array([c[1] for c in table], int)[code]}

    def coding(self):
        r, A = self.r, self.A
        v10 = r.random(A) < np.array([.1, .35, .75, .95])[self.agroup[self.P]]
        rows, j, _, order, icd = self._codes(DX, r.integers(3, 14, A), v10)
        self.dx_top = order[:, :3]
        self.emit("hosp/diagnoses_icd", {**self.ids(rows), "seq_num": j + 1, **icd})
        rows, j, _, order, icd = self._codes(PX, self.pick(5, A, [.45, .25, .15, .1, .05]), v10)
        self.px_first = np.where(np.bincount(rows, minlength=A) > 0, order[:, 0], -1)
        self.emit("hosp/procedures_icd", {**self.ids(rows), "seq_num": j + 1,
                                          "chartdate": _date(self.during(rows)), **icd})
        rows = _rep(np.where(r.random(A) < 0.15, r.integers(1, 4, A), 0))
        code = self.pick(len(HCPCS), len(rows))
        self.emit("hosp/hcpcsevents", {
            **self.ids(rows), "chartdate": _date(self.during(rows)),
            "hcpcs_cd": _voc([h[0] for h in HCPCS], code), "seq_num": _cumcount(rows) + 1,
            "short_description": _voc([h[3] for h in HCPCS], code)})
        apr = np.flatnonzero(r.random(A) < 0.7)
        rows = np.r_[np.arange(A), apr]
        code = np.r_[self.pick(5, A), 5 + self.pick(5, len(apr))]
        hcfa = np.arange(len(rows)) < A  # HCFA DRGs carry no severity or mortality
        self.emit("hosp/drgcodes", {
            **self.ids(rows), **{c: _voc([d[i] for d in DRG], code) for i, c in
                                 enumerate(("drg_type", "drg_code", "description"))},
            "drg_severity": _num(r.integers(1, 5, len(rows)), hcfa),
            "drg_mortality": _num(r.integers(1, 5, len(rows)), hcfa)})

    # ---------------------------------------------------------------- medications, orders
    def meds(self):
        r, A = self.r, self.A
        ra = _rep(r.integers(3, 13, A))
        R = len(ra)
        drug = self.pick(len(DRUGS), R)
        self.rx_top = drug[_cumcount(ra) < 3].reshape(A, 3)
        start = self.during(ra, 0, .7) // HOUR * HOUR + HOUR
        stop = start + ((self.disch[ra] - start) * self.u(.2, 1, R)).astype(np.int64) // HOUR \
            * HOUR
        no_stop = r.random(R) < 0.05
        enter = start - r.integers(0, 7200, R)
        # POE: each prescription's order plus other orders, numbered per subject in time order.
        oa = _rep(r.integers(3, 11, A))
        kinds = [("Lab", None), ("General Care", "Vitals/Monitoring"), ("General Care", "Activity"),
                 ("IV therapy", "IV fluids"), ("Radiology", "General Xray"),
                 ("Nutrition", "Diet Order"), ("Consults", None), ("ADT orders", "Discharge"),
                 ("Medications", None)]
        kind = np.r_[np.full(R, 8), self.pick(8, len(oa))]
        otime = np.where(kind[R:] == 7, self.disch[oa] - r.integers(1800, 6 * HOUR, len(oa)),
                         self.during(oa))
        pa, pt = np.r_[ra, oa], np.r_[enter, otime]
        o = np.lexsort((pt, self.P[pa]))
        seq = np.empty(len(pa), np.int64)
        seq[o] = _cumcount(self.P[pa][o]) + 1
        poe_id = _join(self.sid[self.P[pa]], seq)
        self.poe = {"poe_id": poe_id[o], "poe_seq": seq[o], "subject_id": self.sid[self.P[pa]][o],
                    "kind": kind[o], "ordertime": pt[o]}
        self.emit("hosp/poe", {
            "poe_id": poe_id[o], "poe_seq": seq[o], **{c: v[o] for c, v in self.ids(pa).items()},
            "ordertime": _ts(pt[o]), "order_type": _voc([k[0] for k in kinds], kind[o]),
            "order_subtype": _voc([k[1] for k in kinds], kind[o]),
            "transaction_type": _voc(["New", "D/C", "Change"],
                                     self.pick(3, len(pa), [.85, .1, .05])),
            "order_provider_id": self.prov(len(pa), 0.05), "order_status": "Inactive"})
        D = list(zip(*DRUGS))
        dcol = lambda i: _voc(D[i], drug)  # noqa: E731
        pharm = _ids(r, 10_000_000, 89_000_000, R)
        common = {**self.ids(ra), "pharmacy_id": pharm, "poe_id": poe_id[:R],
                  "starttime": _ts(start), "stoptime": _ts(stop, no_stop), "route": dcol(10),
                  "doses_per_24_hrs": dcol(9)}
        self.emit("hosp/prescriptions", {
            **common, "poe_seq": seq[:R], "order_provider_id": self.prov(R, 0.1),
            "drug_type": "MAIN", "drug": dcol(0), **{c: dcol(i) for i, c in enumerate(
                ("formulary_drug_cd", "gsn", "ndc", "prod_strength", "dose_val_rx", "dose_unit_rx",
                 "form_val_disp", "form_unit_disp"), start=1)}})
        self.emit("hosp/pharmacy", {
            **common, "medication": dcol(0), "proc_type": _voc(
                ["Unit Dose", "IV Piggyback"], (dcol(10) == "IV").to_numpy().astype(int)),
            "status": _voc(["Discontinued", "Discontinued via patient discharge",
                            "Inactive (Due to a change order)"], self.pick(3, R, [.5, .35, .15])),
            "entertime": _ts(enter), "verifiedtime": _ts(enter + r.integers(0, 1800, R)),
            "frequency": dcol(11), "disp_sched": dcol(12), "duration_interval": "Ongoing",
            "expiration_value": 36, "expiration_unit": "Hours", "dispensation": _voc(
                ["Omnicell", "Floor Stock Item"], (r.random(R) < 0.15).astype(int))})
        # eMAR: administrations at the drug's frequency while the order runs (at most 6).
        every = 24 / np.array([float(x or 1) for x in D[9]])[drug] * HOUR
        end = np.where(no_stop, self.disch[ra], stop) - 20 * MIN
        ea = _rep(np.clip((end - start) // every + 1, 1, 6).astype(int))
        ct = start[ea] + (_cumcount(ea) * every[ea]).astype(np.int64) + r.integers(
            -20, 20, len(ea)) * MIN
        eseq = _cumcount(self.P[ra][ea]) + 1
        etxt = self.pick(4, len(ea), [.85, .08, .04, .03])  # drawn where the dict drew it
        self.emar = {"subject_id": self.sid[self.P[ra][ea]], "emar_seq": eseq,
                     "drug": drug[ea], "pharmacy_id": pharm[ea], "given": etxt != 1}
        self.emit("hosp/emar", {
            **self.ids(ra[ea]), "emar_id": _join(self.sid[self.P[ra][ea]], eseq),
            "emar_seq": eseq, "poe_id": poe_id.gather(ea), "pharmacy_id": pharm[ea],
            "charttime": _ts(ct), "medication": dcol(0).gather(ea),
            "event_txt": _voc(["Administered", "Not Given", "Flushed", "Confirmed"], etxt),
            "scheduletime": _ts((ct + 30 * MIN) // HOUR * HOUR),
            "storetime": _ts(ct + r.integers(0, 20, len(ea)) * MIN)})

    def omr(self):
        r = self.r
        vp = _rep(r.integers(0, 6, self.n))  # outpatient visits before the first admission
        V = len(vp)
        day = _date(self.first_admit[vp] - r.integers(1, 900, V) * DAY)
        kg = self.weight[vp] + r.normal(0, 1.5, V)
        sbp = np.clip(r.normal(125, 15, V), 90, 190).astype(np.int64)
        dbp = np.clip(sbp * 0.6 + r.normal(0, 6, V), 50, 110).astype(np.int64)
        hv = np.flatnonzero(r.random(V) < 0.4)
        every = np.arange(V)
        results = [("Blood Pressure", every, _join(sbp, dbp).str.replace("-", "/")),
                   ("Weight (Lbs)", every, pl.Series(np.round(kg * 2.2046, 1))),
                   ("BMI (kg/m2)", every, pl.Series(np.round(kg / (self.height[vp] / 100) ** 2,
                                                             1))),
                   ("Height (Inches)", hv, pl.Series(np.round(self.height[vp][hv] / 2.54, 1)))]
        rows = np.concatenate([x[1] for x in results])
        self.emit("hosp/omr", {
            "subject_id": self.sid[vp][rows], "chartdate": day.gather(rows), "seq_num": 1,
            "result_name": _voc([x[0] for x in results], _rep([len(x[1]) for x in results])),
            "result_value": pl.concat([x[2].cast(pl.String) for x in results])})

    # ---------------------------------------------------------------- notes
    def notes(self):
        r, A = self.r, self.A
        sex = np.where(self.female[self.P], "F", "M").tolist()
        word = np.where(self.female[self.P], "woman", "man").tolist()
        age, cc, dx = self.age_adm.tolist(), self.pick(len(CHIEF), A).tolist(), self.dx_top.tolist()
        vit = np.c_[r.normal(95, 15, A), r.normal(128, 18, A), r.normal(72, 10, A),
                    np.clip(r.normal(95, 2.5, A), 85, 100)].astype(int).tolist()
        labs = {k: ["___" if x != x else f"{x:g}" for x in v.tolist()]  # ___: not drawn
                for k, v in self.first_labs.items()}
        meds = [f"{d[0]} {d[5]} {d[6]} {d[10]} {d[11]}" for d in DRUGS]
        svc = {"CSURG": "CARDIOTHORACIC", "NSURG": "NEUROSURGERY", "NMED": "NEUROLOGY",
               "ORTHO": "ORTHOPAEDICS", "SURG": "SURGERY", "VSURG": "SURGERY", "TRAUM": "SURGERY"}
        dispo = ["Home", "Home With Service", "Extended Care", "Extended Care", "Extended Care",
                 "Home With Service", "Home", "Home", "Expired"]
        allergy = ["No Known Allergies / Adverse Drug Reactions", "Penicillins",
                   "Sulfa (Sulfonamide Antibiotics) / Codeine"]

        def results(a):
            g = {k: v[a] for k, v in labs.items()}
            return (f"___ 06:10AM BLOOD WBC-{g[51301]} Hgb-{g[51222]} Hct-{g[51221]} Plt Ct-"
                    f"{g[51265]}\n___ 06:10AM BLOOD Glucose-{g[50931]} UreaN-{g[51006]} Creat-"
                    f"{g[50912]} Na-{g[50983]} K-{g[50971]} Cl-{g[50902]} HCO3-{g[50882]}")

        def discharge(a, j):
            t1, t2, t3 = (DX[i][2] for i in dx[a])
            m = [meds[i] for i in self.rx_top[a]]
            if j:  # later notes of an admission are addenda
                return (f"ADDENDUM:\n \nDischarge medications were reviewed with the patient; "
                        f"{m[0]} was \"held\" at discharge, to be restarted by the PCP, ___.\n \n"
                        f"Pertinent Results:\n{results(a)}\n")
            complaint = CHIEF[cc[a]]
            icu = (f"The patient was transferred to the {ICU_UNITS[self.adm_unit[a]]} for closer "
                   "monitoring, and returned to the floor once stable.\n"
                   if self.adm_unit[a] >= 0 else "")
            hr, sbp, dbp, spo2 = vit[a]
            sections = {
                "Chief Complaint": complaint,
                "Major Surgical or Invasive Procedure":
                    PX[self.px_first[a]][2] if self.px_first[a] >= 0 else "None",
                "History of Present Illness":
                    f"{age[a]} y/o {word[a]} with a history of {t2.lower()}, {t3.lower()} who "
                    f"presents with {complaint.lower()}. Per the patient, \"it started "
                    f"{2 + a % 6} days ago, and it has been getting worse.\" In the ED, initial "
                    f"vitals were HR {hr}, BP {sbp}/{dbp}, SpO2 {spo2}% on RA.",
                "Past Medical History": f"- {t2}\n- {t3}",
                "Pertinent Results": f"ADMISSION LABS:\n{results(a)}",
                "Brief Hospital Course":
                    f"Mr./Ms. ___ is a {age[a]} y/o {word[a]} admitted with {t1.lower()}.\n{icu}"
                    f"# {t1}: Treated with {m[0]}, with improvement.\n"
                    f"# {t2}: Continued home regimen, stable.",
                "Discharge Medications": "\n".join(f"{i}. {x}" for i, x in enumerate(m, 1)),
                "Discharge Disposition": dispo[self.dloc[a]],
                "Discharge Diagnosis": f"Primary: {t1}\nSecondary: {t2}, {t3}",
                "Discharge Condition": "Mental Status: Clear and coherent.\nLevel of "
                    "Consciousness: Alert and interactive.\nActivity Status: Ambulatory - "
                    "Independent.",
                "Discharge Instructions":
                    f"Dear Mr./Ms. ___,\n \nIt was a pleasure caring for you at ___. You were "
                    f"admitted for \"{complaint.lower()}\". Please take your medications as "
                    "prescribed, and call your doctor if you develop fever, chest pain, or "
                    "shortness of breath.",
                "Followup Instructions": "___"}
            return (f" \nName:  ___                     Unit No:   ___\n \nAdmission Date:  ___"
                    f"              Discharge Date:   ___\n \nDate of Birth:  ___             "
                    f"Sex:   {sex[a]}\n \nService: "
                    f"{svc.get(SERVICES[self.service[a]], 'MEDICINE')}\n \nAllergies: \n"
                    f"{allergy[a % 3]}\n \nAttending: ___.\n"
                    + "".join(f" \n{k}:\n{v}\n" for k, v in sections.items()))

        def radiology(a, e):
            exam, tech, findings, impression = EXAMS[e]
            return (f"EXAMINATION:  {exam}\n \nINDICATION:  ___ year old {word[a]} with "
                    f"{DX[dx[a][0]][2].lower()}, {CHIEF[cc[a]].lower()}.  // Evaluate for "
                    f"\"interval change\".\n \nTECHNIQUE:  {tech}\n \nCOMPARISON:  ___\n \n"
                    f"FINDINGS: \n \n{findings}\n \nIMPRESSION: \n \n{impression}\n")

        self.note_rows = {}
        for kind, counts in (("DS", self.pick(3, A, [.8, .15, .05]) + 1),
                             ("RR", self.pick(6, A, [.3, .25, .2, .12, .08, .05]))):
            na = _rep(counts)
            N, pat = len(na), self.P[na]
            seq = _cumcount(pat) + 1
            if kind == "DS":  # written at discharge
                t = self.disch[na]
                text = [discharge(a, k) for a, k in zip(na.tolist(), _cumcount(na).tolist())]
                store = t + r.integers(HOUR, 2 * DAY, N)
            else:
                seq += r.integers(0, 30, self.n)[pat]  # MIMIC-IV-Note RR numbering has gaps
                t = self.during(na) // MIN * MIN
                # An admission's 2nd (5th, ...) report is a second study ordered with the one
                # before it (a CT chest with a CT abdomen): the same charttime, as
                # MIMIC-IV-Note has. No draw: every other value stays as it was.
                k = _cumcount(na)
                same = np.flatnonzero((k > 0) & (k % 3 == 1))
                t[same] = t[same - 1]
                exam = self.pick(len(EXAMS), N)
                text = [radiology(a, e) for a, e in zip(na.tolist(), exam.tolist())]
                store = t + r.integers(HOUR // 2, 8 * HOUR, N)
            self.note_rows[kind] = {"note_id": _join(self.sid[pat], kind, seq),
                                    "subject_id": self.sid[pat],
                                    "exam": exam if kind == "RR" else None}
            self.emit("note/discharge" if kind == "DS" else "note/radiology", {
                "note_id": _join(self.sid[pat], kind, seq), **self.ids(na), "note_type": kind,
                "note_seq": seq, "charttime": _ts(t), "storetime": _ts(store),
                "text": pl.Series(text, dtype=pl.String)})

    # ---------------------------------------------------------------- detail tables
    def details(self):
        """emar_detail, poe_detail and the note details, from their own random stream."""
        r, e = self.detail_rng, self.emar
        E = len(e["subject_id"])
        D = list(zip(*DRUGS))
        drug = e["drug"]
        emar_id = _join(e["subject_id"], e["emar_seq"])
        iv = np.array([x == "IV" for x in D[10]])[drug]
        drip = iv & (r.random(E) < 0.3)  # IV drugs given as a continuous infusion
        # One summary row per administration (what was due, the infusion rate) and one row
        # per product given (1.1; a second product 1.2 for a tenth). A few rows name an
        # administration eMAR never recorded: the build drops them as parent_not_found.
        second = np.flatnonzero(e["given"] & (r.random(E) < 0.1))
        prod = np.r_[np.flatnonzero(e["given"]), second]
        ordinal = np.r_[np.full(len(prod) - len(second), "1.1"), np.full(len(second), "1.2")]
        due = _voc(D[5], drug)
        given = due.gather(prod).str.split("-").list.first()
        given = given.scatter(np.flatnonzero(r.random(len(prod)) < 0.01), "___")
        rate = _num(np.round(r.uniform(5, 150, E), 1), ~drip)
        orphan = np.union1d(np.flatnonzero(r.random(E) < 0.002), [E - 1])  # at least one
        rows = np.r_[np.arange(E), prod, orphan]
        n_sum, n_prod = E, len(prod)
        summary, product = np.arange(len(rows)) < n_sum, (np.arange(len(rows)) >= n_sum) & (
            np.arange(len(rows)) < n_sum + n_prod)
        eid = emar_id.gather(rows).scatter(
            np.arange(n_sum + n_prod, len(rows)),
            _join(e["subject_id"][orphan], e["emar_seq"][orphan] + 100_000))
        text = lambda v, mask: pl.Series(v, dtype=pl.String).scatter(  # noqa: E731
            np.flatnonzero(~mask), None)
        # each administration's rows together, its summary first (as in MIMIC-IV)
        o = np.lexsort((np.arange(len(rows)), np.r_[rows[:n_sum + n_prod], orphan]))
        self.emit("hosp/emar_detail", {c: v[o] if isinstance(v, np.ndarray) else v.gather(o)
                                       for c, v in {
            "subject_id": e["subject_id"][rows], "emar_id": eid, "emar_seq": e["emar_seq"][rows],
            "parent_field_ordinal": text(np.r_[[""] * n_sum, ordinal, ["1.1"] * len(orphan)],
                                         ~summary),
            "administration_type": text(np.where(drip, "IV Infusion", np.where(
                iv, "IV Bolus", "Standard Maintenance Medication"))[rows], summary),
            "pharmacy_id": _num(e["pharmacy_id"][rows], summary),
            "barcode_type": text(np.full(len(rows), "bc"), ~summary),
            "dose_due": due.gather(rows).scatter(np.flatnonzero(~summary | drip[rows]), None),
            "dose_due_unit": _voc(D[6], drug[rows]).scatter(np.flatnonzero(~summary), None),
            "dose_given": pl.concat([pl.Series([None] * n_sum, dtype=pl.String), given,
                                     due.gather(orphan)]),
            "dose_given_unit": _voc(D[6], drug[rows]).scatter(np.flatnonzero(summary), None),
            "product_code": _voc(D[1], drug[rows]).scatter(np.flatnonzero(summary), None),
            "product_description": (_voc(D[0], drug[rows]) + " " + _voc(D[4], drug[rows]))
            .scatter(np.flatnonzero(summary), None),
            "infusion_rate": rate.gather(rows).scatter(np.flatnonzero(~summary), None),
            "infusion_rate_unit": text(np.full(len(rows), "mL/hr"), summary & drip[rows]),
            "route": text(_voc(D[10], drug[rows]).to_numpy().astype(str), summary & ~iv[rows]),
        }.items()})
        # POE order fields, by order kind: discharge orders' planning, consults' status and
        # its time, IV fluids' indication.
        poe = self.poe
        fields = {7: [("Discharge Planning", ["Finalized"]), ("Discharge When", ["Discharge Now"])],
                  6: [("Consult Status", ["Accepted"]), ("Consult Status Time", None)],
                  3: [("Indication", ["Hydration", "Antibiotics", "Other"])]}
        out = []
        for k, fs in fields.items():
            rows = np.flatnonzero(poe["kind"] == k)
            for name, values in fs:
                v = (_ts(poe["ordertime"][rows] + r.integers(600, 4 * HOUR, len(rows)))
                     .dt.strftime("%Y-%m-%d %H:%M:%S") if values is None
                     else _voc(values, r.integers(0, len(values), len(rows))))
                out.append(pl.DataFrame({"row": rows, "field_name": name, "field_value": v}))
        pd = pl.concat(out).sort("row", maintain_order=True)
        rows = pd["row"].to_numpy()
        self.emit("hosp/poe_detail", {
            "poe_id": poe["poe_id"].gather(rows), "poe_seq": poe["poe_seq"][rows],
            "subject_id": poe["subject_id"][rows], "field_name": pd["field_name"],
            "field_value": pd["field_value"]})
        # Note details: every discharge summary's author; every radiology report's exam
        # name, exam code and CPT code, and for a few a second CPT code (field_ordinal 2).
        ds = self.note_rows["DS"]
        self.emit("note/discharge_detail", {
            "note_id": ds["note_id"], "subject_id": ds["subject_id"], "field_name": "author",
            "field_value": pl.Series(["___"] * len(ds["subject_id"])), "field_ordinal": 1})
        rr = self.note_rows["RR"]
        n, ex = len(rr["subject_id"]), rr["exam"]
        extra = np.flatnonzero(r.random(n) < 0.1)
        rows = np.r_[np.tile(np.arange(n), 3), extra]
        names = np.r_[np.repeat(["exam_name", "exam_code", "cpt_code"], n),
                      np.full(len(extra), "cpt_code")]
        values = np.r_[[x[0] for x in EXAMS], [c[0] for c in EXAM_CODES],
                       [c[1] for c in EXAM_CODES]]
        pick = np.r_[ex, len(EXAMS) + ex, 2 * len(EXAMS) + ex, 2 * len(EXAMS) + ex[extra]]
        o = np.lexsort((np.arange(len(rows)), rows))  # a note's fields together
        self.emit("note/radiology_detail", {
            "note_id": rr["note_id"].gather(rows[o]), "subject_id": rr["subject_id"][rows[o]],
            "field_name": pl.Series(names[o]), "field_value": pl.Series(values[pick][o]),
            "field_ordinal": np.r_[np.ones(3 * n, np.int64), np.full(len(extra), 2)][o]})

    def id_lists(self):
        """provider and caregiver: id lists with no events (the build lists them as not read)."""
        r = self.detail_rng
        self.emit("hosp/provider", {"provider_id": pl.Series(sorted(set(self.providers)))})
        self.emit("icu/caregiver", {"caregiver_id": np.unique(r.integers(100, 99999, 300))})

    # ---------------------------------------------------------------- dictionaries
    def dictionaries(self):
        def table(name, rows, cols, ints=()):
            d = list(zip(*rows))
            self.emit(name, {c: np.array(d[i], np.int64) if c in ints else _voc(d[i], np.arange(
                len(rows))) for i, c in enumerate(cols)})

        table("icu/d_items", D_ITEMS, HEADERS["icu/d_items"].split(",")[:7], ("itemid",))
        table("hosp/d_labitems", [x[:4] for x in LABS] + [
            (x[0], x[1], "Urine", "Hematology") for x in TEXT_LABS],
              ("itemid", "label", "fluid", "category"), ("itemid",))
        for name, codes in (("hosp/d_icd_diagnoses", DX), ("hosp/d_icd_procedures", PX)):
            table(name, codes, ("icd_code", "icd_version", "long_title"), ("icd_version",))
        table("hosp/d_hcpcs", HCPCS, HEADERS["hosp/d_hcpcs"].split(","))


def generate(out_dir: str | Path, n_patients: int = 300, seed: int = 0,
             death_rate: float = 0.06) -> Path:
    """Write a synthetic MIMIC-IV v2.2 (+ MIMIC-IV-Note) tree under out_dir; return out_dir.
    `death_rate`: share of patients whose last admission ends in death (module docstring)."""
    if n_patients < 1:
        raise ValueError(f"n_patients must be >= 1, got {n_patients}")
    if not 0 <= death_rate <= 1:
        raise ValueError(f"death_rate must be in [0, 1], got {death_rate}")
    out = Path(out_dir)
    # gzip (zlib releases the GIL) runs on threads while the next tables are generated.
    with ThreadPoolExecutor(max_workers=2) as pool:
        g = _Synth(out, int(n_patients), seed, pool, death_rate)
        for step in (g.admissions, g.adt, g.chart, g.icu_events, g.labs, g.micro, g.coding,
                     g.meds, g.omr, g.notes, g.dictionaries, g.details, g.id_lists):
            step()
        for job in g.jobs:
            job.result()
    generate_extra(out, seed)
    return out


# The outcome registry an EXTRA_TABLES build joins (README "Your own tables"): written beside
# hosp/, icu/, note/ (never inside them: those hold MIMIC-IV's own files), with its spec.
EXTRA_SPEC = "extra/tables.toml"
EXTRA_TOML = """\
# The synthetic outcome registry (trajectory/synth.py): follow-up contacts after a hospital
# stay, linked by hadm_id. A few rows name admissions that do not exist (counted as
# hadm_not_found), one has no contact time (null_time).
[[table]]
name = "outcome_registry"
file = "outcomes.csv"
key = "hadm_id"

# The contact itself: status in the code, the EQ-5D index (0-1) as its value, at the contact.
[[table.event]]
name = "followup"
code = ["REGISTRY_FOLLOWUP", "status"]
time = ["contact_time"]
value = "eq5d_index"

# That the admission is in the registry, known at its discharge.
[[table.event]]
name = "enrolled"
code = ["REGISTRY_ENROLLED", "site"]
at = "admission_end"
"""


def generate_extra(out_dir: str | Path, seed: int = 0) -> Path:
    """The outcome registry (extra/outcomes.csv, keyed by hadm_id) and its EXTRA_TABLES spec,
    from the admissions already written under out_dir. Its own random stream: every other
    file is the same with or without it. Returns the spec's path."""
    out = Path(out_dir)
    adm = pl.read_csv(out / "hosp" / "admissions.csv.gz", columns=["hadm_id", "dischtime"],
                      schema_overrides={"hadm_id": pl.Int64, "dischtime": pl.String})
    r = np.random.default_rng([int(seed), 19])
    rows = np.flatnonzero(r.random(adm.height) < 0.7)  # 70% of admissions are followed up
    disch = adm["dischtime"].str.to_datetime("%Y-%m-%d %H:%M:%S")[rows].dt.epoch("s").to_numpy()
    contact = disch + r.integers(7 * DAY, 90 * DAY, len(rows))
    n_bad = max(2, len(rows) // 20)  # admissions that do not exist: hadm_not_found
    hadm = np.r_[adm["hadm_id"].to_numpy()[rows], 90_000_000 + np.arange(n_bad)]
    contact = np.r_[contact, contact[:n_bad] if len(rows) >= n_bad else np.full(n_bad, 0)]
    status = _voc(["home", "rehab", "readmitted", "deceased"],
                  r.choice(4, len(hadm), p=[.7, .15, .1, .05]))
    eq5d = np.round(r.uniform(0.2, 1.0, len(hadm)), 3)
    null_time = np.zeros(len(hadm), bool)
    null_time[0] = True  # one contact with no time: dropped as null_time, counted
    frame = pl.DataFrame({
        "hadm_id": hadm, "contact_time": _ts(contact, null_time), "status": status,
        "eq5d_index": eq5d, "site": _voc(["north", "south"], r.integers(0, 2, len(hadm)))})
    (out / "extra").mkdir(parents=True, exist_ok=True)
    frame.write_csv(out / "extra" / "outcomes.csv", datetime_format="%Y-%m-%d %H:%M:%S")
    (out / EXTRA_SPEC).write_text(EXTRA_TOML)
    return out / EXTRA_SPEC


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m trajectory.synth",
                                 description="Write synthetic MIMIC-IV-shaped raw data.")
    ap.add_argument("out_dir")
    ap.add_argument("--patients", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--death-rate", type=float, default=0.06,
                    help="share of patients whose last admission ends in death [0.06]")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    out = generate(args.out_dir, args.patients, args.seed, args.death_rate)
    print(f"{args.patients} synthetic patients -> {out} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
